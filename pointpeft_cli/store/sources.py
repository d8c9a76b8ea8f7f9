"""Where an asset comes from (registry URL, mirror URL, local file or folder) and fetching it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from urllib.request import url2pathname

from pointpeft_cli.errors import AssetUnavailableError, ChecksumMismatchError, UsageError
from pointpeft_cli.store.archive import copy_tree
from pointpeft_cli.store.cache import FileRecord, ensure_free_space
from pointpeft_cli.store.download import (
    FetchOptions,
    TransferProgress,
    discard_partial,
    fetch_url,
    finish_partial,
)
from pointpeft_cli.store.hashing import sha256_file, tree_digest, write_hashed
from pointpeft_cli.store.registry import BROKEN_TLS_HOSTS, Asset

Progress = TransferProgress | None


@dataclass(frozen=True)
class Source:
    """A resolved source: a URL, a local file or a local folder."""

    kind: Literal["url", "file", "dir"]
    location: str
    registry: bool = False

    @property
    def path(self) -> Path:
        return Path(self.location)

    @property
    def insecure_host(self) -> bool:
        return self.kind == "url" and urlsplit(self.location).hostname in BROKEN_TLS_HOSTS


@dataclass(frozen=True)
class Obtained:
    """The original bytes, staged: a file (its hash) or a copied tree (a digest of its hashes)."""

    path: Path
    bytes: int
    sha256: str
    records: tuple[FileRecord, ...] = ()
    resumed: bool = False


def resolve_source(asset: Asset, source: str | None) -> Source:
    """Turn `--from` (or its absence) into a Source.

    Raises:
        AssetUnavailableError: no `--from` and the asset has no URL (licence-gated/manual).
        UsageError: `--from` names a missing path, an unsupported scheme, or a folder for a
            checkpoint.
    """
    if source is None:
        if asset.url is None:
            raise AssetUnavailableError(
                f"{asset.id} cannot be downloaded automatically ({asset.license})",
                hint=asset.howto,
            )
        return Source("url", asset.url, registry=True)
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        return Source("url", source)
    if scheme == "file":
        source = url2pathname(urlsplit(source).path)
    elif len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise UsageError(f"--from {source}: unsupported URL scheme {scheme!r}", hint="use http(s)")
    path = Path(source).expanduser()
    if not path.exists():
        raise UsageError(f"--from {path}: no such file or directory")
    path = path.resolve()  # the path the user named may be a link; links inside are refused
    if path.is_dir():
        if asset.kind == "checkpoint":
            raise UsageError(f"--from {path} is a folder; {asset.id} needs the checkpoint file")
        return Source("dir", str(path))
    return Source("file", str(path))


def _check_pinned(asset: Asset, size: int, sha: str, where: str) -> None:
    spec = asset.file
    if spec.size is not None and size != spec.size:
        raise ChecksumMismatchError(
            f"{where} is {size:,} B, but {spec.name} is {spec.size:,} B",
            hint="the file is truncated or a different file; download it again",
        )
    if spec.sha256 is not None and sha != spec.sha256:
        raise ChecksumMismatchError(
            f"{where}: sha256 {sha} differs from the registry's {spec.sha256}",
            hint="the file is corrupt or a different release; download it again",
        )


def _obtain_url(
    asset: Asset, src: Source, final: Path, staging: Path, opts: FetchOptions, progress: Progress
) -> Obtained:
    factor = 2.2  # room for the safetensors copy / the extracted tree, plus 10 %
    if asset.file.size is not None and src.registry:
        ensure_free_space(final.parent, int(asset.file.size * factor), asset.id)
    expected = asset.file.size if src.registry else None
    insecure = opts.insecure_tls and src.insecure_host
    fetched = fetch_url(
        src.location,
        final,
        asset.file.name,
        replace(opts, insecure_tls=insecure, space_factor=factor),
        expected_size=expected,
        progress=progress,
    )
    try:
        _check_pinned(asset, fetched.bytes, fetched.sha256, src.location)
    except ChecksumMismatchError:
        discard_partial(fetched)  # never resume from bytes that failed verification
        raise
    dest = staging / asset.file.name
    finish_partial(fetched, dest)
    return Obtained(dest, fetched.bytes, fetched.sha256, resumed=fetched.resumed)


def _advance(progress: Progress, label: str, total: int | None) -> Callable[[int], None] | None:
    if progress is None:
        return None
    progress.start(label, total)
    return progress.advance


def obtain(
    asset: Asset, src: Source, final: Path, staging: Path, opts: FetchOptions, progress: Progress
) -> Obtained:
    """Fetch or copy the original bytes into `staging`, hashing them, and check registry pins.

    Checkpoint files are copied (the cache keeps the original); archives are hashed where they
    lie and extracted later; folders are copied file by file.
    """
    if src.kind == "url":
        return _obtain_url(asset, src, final, staging, opts, progress)
    if src.kind == "dir":
        size = sum(p.stat().st_size for p in src.path.rglob("*") if p.is_file())
        ensure_free_space(staging, int(size * 1.1), str(src.path))
        records = copy_tree(src.path, staging / "tree", _advance(progress, asset.id, size))
        digest = tree_digest((r.name, r.sha256) for r in records)
        return Obtained(staging / "tree", sum(r.bytes for r in records), digest, tuple(records))
    size = src.path.stat().st_size
    if asset.kind == "checkpoint":
        ensure_free_space(staging, int(size * 2.2), str(src.path))
        dest = staging / asset.file.name
        with open(src.path, "rb") as fh:
            size, sha = write_hashed(fh, dest, _advance(progress, asset.id, size))
    else:
        dest = src.path
        sha = sha256_file(dest, _advance(progress, f"hashing {asset.id}", size))
    _check_pinned(asset, size, sha, str(src.path))
    return Obtained(dest, size, sha)
