"""The asset registry: every checkpoint and data set pointpeft can fetch (formats.md §2)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from pointpeft_cli.errors import UsageError

AssetKind = Literal["checkpoint", "dataset", "embedded"]

# Hosts whose certificate upstream has let expire for years; only these may be fetched with TLS
# verification off, and only when the user asks for it per run (integrity then rests on hashes).
BROKEN_TLS_HOSTS = frozenset({"shapenet.cs.stanford.edu"})

SHAPENET_TLS_NOTE = (
    "shapenet.cs.stanford.edu serves an expired TLS certificate; if the download fails with a "
    "certificate error, re-run with --insecure-tls (checks stay on the file's sha256)"
)


@dataclass(frozen=True)
class FileSpec:
    """One downloadable file of an asset.

    Attributes:
        name: File name in the cache (checkpoints) or of the archive (data sets).
        urls: Direct-download URLs, first preferred; empty when none can be fetched unattended.
        size: Published size in bytes, or None when upstream publishes none.
        sha256: Published sha256, or None (then the first download's hash is pinned: TOFU).
        layout: Expected checkpoint key layout (`layouts.load_layout` name), checkpoints only.
        md5: Published md5 where only that is known (documentation; the sha256 is pinned on use).
    """

    name: str
    urls: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    layout: str | None = None
    md5: str | None = None

    @property
    def url(self) -> str | None:
        """The preferred URL, or None for manual (licence-gated or browser-only) files."""
        return self.urls[0] if self.urls else None


@dataclass(frozen=True)
class Asset:
    """A registry entry.

    Attributes:
        id: Asset id used on the command line (`pointpeft download <id>`).
        kind: `checkpoint` (converted to model.safetensors), `dataset` (extracted tree) or
            `embedded` (ships inside the package; nothing to download).
        title: One-line description.
        file: The file that is fetched or imported.
        license: Licence / terms-of-use note.
        howto: How to obtain the asset when it cannot be fetched automatically.
        required: Paths (relative to the asset directory) a data set must contain.
    """

    id: str
    kind: AssetKind
    title: str
    file: FileSpec
    license: str
    howto: str = ""
    required: tuple[str, ...] = field(default=())

    @property
    def url(self) -> str | None:
        """The preferred download URL, or None."""
        return self.file.url

    @property
    def insecure_tls_ok(self) -> bool:
        """True when a URL host has a known-broken certificate (BROKEN_TLS_HOSTS)."""
        return any(urlsplit(u).hostname in BROKEN_TLS_HOSTS for u in self.file.urls)


_MAE_URL = "https://github.com/Pang-Yatian/Point-MAE/releases/download/main/pretrain.pth"
_BERT_URL = "https://cloud.tsinghua.edu.cn/f/202b29805eea45d7be92/?dl=1"
_MN40_TXT_URL = "https://shapenet.cs.stanford.edu/media/modelnet40_normal_resampled.zip"
_MN40_H5_URL = "https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip"
_FEWSHOT_DIRS = tuple(f"{w}way_{s}shot" for w in (5, 10) for s in (10, 20))

ASSETS: dict[str, Asset] = {
    a.id: a
    for a in (
        Asset(
            id="point-mae",
            kind="checkpoint",
            title="Point-MAE pre-trained on ShapeNet (pretrain.pth, 209 tensors)",
            file=FileSpec("pretrain.pth", (_MAE_URL,), layout="mae_pretrain"),
            license="MIT (Pang-Yatian/Point-MAE)",
            howto=f"fetched from the Point-MAE GitHub release ({_MAE_URL}); or download it "
            "yourself and run `pointpeft download point-mae --from pretrain.pth`",
        ),
        Asset(
            id="point-bert",
            kind="checkpoint",
            title="Point-BERT pre-trained on ShapeNet (Point-BERT.pth, 411 tensors)",
            file=FileSpec("Point-BERT.pth", (_BERT_URL,), layout="bert_pretrain"),
            license="MIT (lulutang0608/Point-BERT)",
            howto="fetched from Tsinghua Cloud; if unreachable, download it from Baidu "
            "(https://pan.baidu.com/s/1O0_9MYVTGcPcbBccfXZuog, code jvtg) and run "
            "`pointpeft download point-bert --from Point-BERT.pth`",
        ),
        Asset(
            id="point-mae-mini",
            kind="embedded",
            title="point-mae-mini pre-trained by pointpeft on the procedural shapes (fp16 encoder)",
            file=FileSpec(
                "point-mae-mini.safetensors",
                size=5_617_376,
                sha256="7eac90eba4ad5ff6322922d618bdc91e5926ec5cf1233b3d11f55b85f7660443",
            ),
            license="MIT (pointpeft)",
            howto="ships inside the package (pointpeft_cli/assets/); rebuild it with "
            "`pointpeft pretrain --preset pretrain_point_mae_mini --out runs/pretrain-mini` "
            "(its encoder-fp16.safetensors)",
        ),
        Asset(
            id="modelnet40",
            kind="dataset",
            title="ModelNet40 resampled point clouds (PointNet++ text release, 10k points/shape)",
            file=FileSpec("modelnet40_normal_resampled.zip", (_MN40_TXT_URL,)),
            license="ModelNet (Princeton): academic research use only",
            howto="about 1.6 GB, no published checksum (sha256 pinned on first download). "
            + SHAPENET_TLS_NOTE
            + "; or import a copy: `pointpeft download modelnet40 --from "
            "modelnet40_normal_resampled.zip` (or the extracted directory)",
            required=(
                "modelnet40_shape_names.txt",
                "modelnet40_train.txt",
                "modelnet40_test.txt",
            ),
        ),
        Asset(
            id="modelnet40-h5",
            kind="dataset",
            title="ModelNet40 h5, 2048 points/shape (PointNet/DGCNN release)",
            file=FileSpec(
                "modelnet40_ply_hdf5_2048.zip",
                (_MN40_H5_URL,),
                size=435_212_151,
                sha256="07670e237db72ece0f723b9abb571534c9ad655a6456b389646587dc72bb8bae",
                md5="c9ab8e6dfb16f67afdab25e155c79e59",
            ),
            license="ModelNet (Princeton): academic research use only",
            howto=SHAPENET_TLS_NOTE + "; or `pointpeft download modelnet40-h5 --from "
            "modelnet40_ply_hdf5_2048.zip`",
            required=("shape_names.txt", "ply_data_train0.h5", "ply_data_test0.h5"),
        ),
        Asset(
            id="modelnet40-fewshot",
            kind="dataset",
            title="ModelNet40 few-shot episodes ({5,10}way_{10,20}shot/{0..9}.pkl)",
            file=FileSpec("ModelNetFewshot.zip"),
            license="ModelNet (Princeton): academic research use only",
            howto="only on Google Drive (folder 1gqvidcQsvdxP_3MdUr424Vkyjb_gt7TW) or Tsinghua "
            "Cloud (https://cloud.tsinghua.edu.cn/d/d4aac5b8f02749e3bdaa/); download the "
            "ModelNetFewshot folder in a browser, then run `pointpeft download "
            "modelnet40-fewshot --from ModelNetFewshot` (the folder, or a .zip of it)",
            required=tuple(f"{d}/{fold}.pkl" for d in _FEWSHOT_DIRS for fold in range(10)),
        ),
        Asset(
            id="scanobjectnn",
            kind="dataset",
            title="ScanObjectNN h5 files (OBJ_BG, OBJ_ONLY, PB_T50_RS)",
            file=FileSpec(
                "h5_files.zip", size=13_099_259_542, md5="36876af479f9ad39abad5ebcd89038dd"
            ),
            license="ScanObjectNN terms of use (HKUST-VGD): research use, agreed per user",
            howto="licence-gated: fill in the terms-of-use form "
            "(https://forms.gle/g29a6qSgjatjb1vZ6), download h5_files.zip (13,099,259,542 B, "
            "md5 36876af479f9ad39abad5ebcd89038dd) from the link you are sent, then run "
            "`pointpeft download scanobjectnn --from h5_files.zip` (or the extracted h5_files/)",
            required=(
                "main_split/training_objectdataset.h5",
                "main_split/test_objectdataset.h5",
                "main_split_nobg/training_objectdataset.h5",
                "main_split_nobg/test_objectdataset.h5",
                "main_split/training_objectdataset_augmentedrot_scale75.h5",
                "main_split/test_objectdataset_augmentedrot_scale75.h5",
            ),
        ),
    )
}


def get_asset(asset_id: str) -> Asset:
    """The registry entry for `asset_id`, or a UsageError suggesting a close id."""
    try:
        return ASSETS[asset_id]
    except KeyError:
        close = difflib.get_close_matches(asset_id, ASSETS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see `pointpeft download --list`"
        raise UsageError(f"unknown asset {asset_id!r}", hint=hint) from None


def kind_dir(kind: AssetKind) -> str:
    """The cache sub-directory of an asset kind."""
    return {"checkpoint": "checkpoints", "dataset": "datasets", "embedded": "embedded"}[kind]
