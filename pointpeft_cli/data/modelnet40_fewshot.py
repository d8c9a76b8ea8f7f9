"""ModelNet40 few-shot episodes (formats.md §3.3): upstream ``.pkl`` files or generated ones.

Upstream ``{way}way_{shot}shot/{fold}.pkl`` holds ``{'train': [...], 'test': [...]}`` of
``(points [8192, 6], episode_label, modelnet40_label)``; it is read only with ``trust_pickle``.
Without those files, episodes are generated from ModelNet40 with the upstream protocol
(``generate_few_shot_data.py``): ``way`` random classes, ``shot`` random train samples each
(the class needs more than ``shot``), 20 random test-split queries each, both lists shuffled;
the fold number is the random seed. Episode labels are ``0..way-1`` in the order the classes
were drawn; class names are the chosen ModelNet40 names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointpeft_cli.data.base import PointDataset, check_cloud
from pointpeft_cli.data.fingerprint import digest, files_digest
from pointpeft_cli.data.io import cached_dataset_dirs, find_root
from pointpeft_cli.data.modelnet40 import load_modelnet40
from pointpeft_cli.data.modelnet40_raw import _unpickle
from pointpeft_cli.errors import CorruptFileError, DataError
from pointpeft_cli.tasks import MODELNET40_CLASSES

QUERIES = 20


@dataclass(frozen=True)
class Episode:
    """Row indices into the source splits, with episode labels and the chosen class ids."""

    train_rows: np.ndarray
    train_labels: np.ndarray
    test_rows: np.ndarray
    test_labels: np.ndarray
    classes: np.ndarray  # source label of episode label i


def make_episode(
    train_labels: np.ndarray, test_labels: np.ndarray, way: int, shot: int, fold: int,
    queries: int = QUERIES,
) -> Episode:  # fmt: skip
    """Draw one episode deterministically from ``fold`` (the seed), upstream protocol."""
    rng = np.random.default_rng([fold, 20240])
    classes = rng.permutation(np.unique(train_labels))
    if len(classes) < way:
        raise DataError(
            f"a {way}-way episode needs {way} classes, the data has {len(classes)}",
            hint="use a smaller --way or more classes",
        )
    classes = classes[:way]
    tr, te = [], []
    for i, c in enumerate(classes):
        pool = rng.permutation(np.flatnonzero(train_labels == c))
        queries_pool = rng.permutation(np.flatnonzero(test_labels == c))
        if len(pool) <= shot or len(queries_pool) < queries:
            raise DataError(
                f"class {int(c)} has {len(pool)} train / {len(queries_pool)} test samples; a "
                f"{shot}-shot episode needs more than {shot} / at least {queries}",
                hint="use a smaller --shot or the full ModelNet40",
            )
        tr += [(r, i) for r in pool[:shot]]
        te += [(r, i) for r in queries_pool[:queries]]
    tr = [tr[j] for j in rng.permutation(len(tr))]
    te = [te[j] for j in rng.permutation(len(te))]
    return Episode(
        np.array([r for r, _ in tr]), np.array([lb for _, lb in tr]),
        np.array([r for r, _ in te]), np.array([lb for _, lb in te]), classes,
    )  # fmt: skip


def _find_pkl(data_dir: Path | None, cache_root: Path, way: int, shot: int, fold: int):
    sub = f"{way}way_{shot}shot"
    bases = [Path(data_dir)] if data_dir is not None else cached_dataset_dirs(
        cache_root, "modelnet40-fewshot"
    )  # fmt: skip
    for base in bases:
        root = find_root(base, sub)
        if root is not None:
            path = root / sub / f"{fold}.pkl"
            if not path.is_file():
                raise DataError(f"{path}: no such file", hint="folds are 0..9")
            return path
    return None


def _from_pkl(path: Path, split: str, trust_pickle: bool, way: int, seed: int) -> PointDataset:
    data = _unpickle(path, trust_pickle)
    if not isinstance(data, dict) or split not in data or not isinstance(data[split], list):
        msg = f"{path}: expected a dict with 'train'/'test' lists"
        raise CorruptFileError(msg, hint="re-download the few-shot split")
    names: dict[int, str] = {}
    clouds, labels = [], []
    for item in data[split]:
        try:
            points, label, orig = item
            label, orig = int(label), int(np.asarray(orig).reshape(-1)[0])
        except (TypeError, ValueError, IndexError) as exc:
            raise CorruptFileError(f"{path}: bad episode item ({exc})", hint="re-download") from exc
        if not 0 <= label < way or not 0 <= orig < len(MODELNET40_CLASSES):
            raise CorruptFileError(f"{path}: label {label}/{orig} out of range", hint="re-download")
        if names.setdefault(label, MODELNET40_CLASSES[orig]) != MODELNET40_CLASSES[orig]:
            raise CorruptFileError(f"{path}: episode label {label} maps to two classes", hint="")
        clouds.append(check_cloud(np.asarray(points), path))
        labels.append(label)
    if sorted(names) != list(range(way)) or len({len(c) for c in clouds}) != 1:
        raise CorruptFileError(f"{path}: not a {way}-way episode of equal-size clouds", hint="")
    class_names = [names[i] for i in range(way)]
    fp = digest("fewshot-pkl", files_digest([path], path.parent.parent))
    return PointDataset(
        np.stack(clouds), np.array(labels), class_names, split, fp, normalize=True, seed=seed
    )


def load_fewshot(
    split: str, *, way: int, shot: int, fold: int, data_dir: Path | None, cache_root: Path,
    trust_pickle: bool = False, seed: int = 0,
) -> PointDataset:  # fmt: skip
    """One few-shot episode's ``split`` (support = train, queries = test)."""
    pkl = _find_pkl(data_dir, cache_root, way, shot, fold)
    if pkl is not None:
        return _from_pkl(pkl, split, trust_pickle, way, seed)
    kw = {"data_dir": data_dir, "cache_root": cache_root, "trust_pickle": trust_pickle}
    train = load_modelnet40("train", **kw)
    test = load_modelnet40("test", **kw)
    ep = make_episode(train.labels, test.labels, way, shot, fold)
    src = train if split == "train" else test
    rows = ep.train_rows if split == "train" else ep.test_rows
    labels = ep.train_labels if split == "train" else ep.test_labels
    points = np.stack([np.asarray(src._points[r], dtype=np.float32) for r in rows])
    names = [src.class_names[c] for c in ep.classes]
    fp = digest("fewshot-gen", src.fingerprint(), way, shot, fold)
    return PointDataset(points, labels, names, split, fp, normalize=True, seed=seed)
