"""On-disk cache layout: asset directories, manifest.json (the completeness marker), commits."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pointpeft_cli.errors import AssetNotCachedError, AssetUnavailableError, CorruptFileError
from pointpeft_cli.fsutil import atomic_write_text
from pointpeft_cli.store.registry import Asset, get_asset, kind_dir

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
PARTIAL_SUFFIX = ".incomplete"
PARTIAL_RECORD_SUFFIX = ".incomplete.json"


@dataclass(frozen=True)
class FileRecord:
    """One file of a cached asset: path relative to the asset directory, size and sha256."""

    name: str
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def offline_hint(asset_id: str) -> str:
    """The hint every 'not cached while offline' error carries."""
    return f"run `pointpeft download {asset_id}` while online, or unset POINTPEFT_OFFLINE"


def asset_dir(root: Path, asset: Asset) -> Path:
    """`<root>/{checkpoints,datasets}/<asset-id>` (whether or not it exists)."""
    return root / kind_dir(asset.kind) / asset.id


def is_partial_name(name: str) -> bool:
    """True for temp/partial files and staging dirs that `cache prune` may remove."""
    return name.endswith((PARTIAL_SUFFIX, PARTIAL_RECORD_SUFFIX))


def short_id() -> str:
    """Eight hex characters for unique temp names."""
    return uuid.uuid4().hex[:8]


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of an asset directory, or None when the asset is not complete."""
    path = directory / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CorruptFileError(
            f"unreadable cache manifest {path}: {exc}",
            hint=f"run `pointpeft cache rm {directory.name}` and download it again",
        ) from None
    if not isinstance(data, dict) or not data.get("complete"):
        return None
    return data


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write manifest.json atomically; call it after every other file of the asset is in place."""
    body = {"schema": MANIFEST_SCHEMA, **manifest, "complete": True}
    atomic_write_text(directory / MANIFEST, json.dumps(body, indent=2, sort_keys=True) + "\n")


def manifest_files(manifest: dict[str, Any]) -> list[FileRecord]:
    """The file records of a manifest."""
    return [FileRecord(f["name"], int(f["bytes"]), f["sha256"]) for f in manifest.get("files", [])]


def asset_path(root: Path, asset_id: str) -> Path:
    """The directory of a completely cached asset.

    Raises:
        UsageError: `asset_id` is not in the registry.
        AssetNotCachedError: the asset is not cached (exit 3, with the download hint).
    """
    asset = get_asset(asset_id)
    directory = asset_dir(root, asset)
    if read_manifest(directory) is None:
        raise AssetNotCachedError(
            f"{asset_id} is not in the cache ({directory})", hint=offline_hint(asset_id)
        )
    return directory


def new_staging(root: Path, asset: Asset) -> Path:
    """A fresh staging directory beside the asset directory (same filesystem, so renames work)."""
    parent = root / kind_dir(asset.kind)
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{asset.id}.{short_id()}{PARTIAL_SUFFIX}"
    staging.mkdir()
    return staging


def commit_dir(staged: Path, final: Path) -> None:
    """Move a finished asset directory into place, replacing any previous one.

    The staged directory already holds its manifest, so whatever name a kill leaves behind is
    either complete or not at the final path at all.
    """
    if not final.exists():
        os.replace(staged, final)
        return
    old = final.with_name(f".{final.name}.{short_id()}.old{PARTIAL_SUFFIX}")
    os.replace(final, old)
    try:
        os.replace(staged, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover_interrupted(root: Path, asset: Asset) -> bool:
    """Clean up after a process that was killed while installing `asset` (hold its lock).

    A kill between the two renames of `commit_dir` leaves the previous complete copy under its
    `.old` name and nothing at the final path: that copy is put back. Staging directories of
    killed installs are removed. Partial downloads (inside the asset directory) are kept, for
    the next download to resume.

    Returns:
        True when a previous copy was restored.
    """
    final = asset_dir(root, asset)
    parent = final.parent
    restored = False
    if not parent.is_dir():
        return restored
    for old in sorted(parent.glob(f".{asset.id}.*.old{PARTIAL_SUFFIX}")):
        if not final.exists() and read_manifest(old) is not None:
            os.replace(old, final)
            restored = True
    for stale in parent.glob(f".{asset.id}.*{PARTIAL_SUFFIX}"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return restored


def ensure_free_space(directory: Path, needed: int, what: str) -> None:
    """Raise AssetUnavailableError (exit 3) when the filesystem of `directory` lacks `needed` B."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise AssetUnavailableError(
            f"not enough free disk space for {what}: need {needed:,} B, {free:,} B free in {probe}",
            hint="free some space, or put the cache elsewhere with --cache-dir / POINTPEFT_HOME",
        )


def tree_bytes(path: Path) -> int:
    """Total size of the regular files under `path` (links are not followed)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def remove_tree(path: Path) -> None:
    """Delete a file or directory tree (never following links)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
