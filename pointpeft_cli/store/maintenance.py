"""Cache maintenance behind `pointpeft cache`: list, re-hash, remove, prune."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pointpeft_cli.errors import AssetNotCachedError
from pointpeft_cli.store.cache import (
    MANIFEST,
    is_partial_name,
    manifest_files,
    read_manifest,
    remove_tree,
    tree_bytes,
)
from pointpeft_cli.store.hashing import sha256_file
from pointpeft_cli.store.locking import asset_lock
from pointpeft_cli.store.registry import ASSETS, kind_dir

KINDS = ("checkpoint", "dataset")


@dataclass(frozen=True)
class CacheEntry:
    """One asset directory in the cache."""

    id: str
    kind: str
    path: Path
    bytes: int
    complete: bool
    known: bool
    files: int = 0
    sha256: str | None = None
    created: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "path": str(self.path),
            "bytes": self.bytes,
            "complete": self.complete,
            "known": self.known,
            "files": self.files,
            "sha256": self.sha256,
            "created": self.created,
        }


@dataclass
class VerifyReport:
    """The outcome of re-hashing one cached asset."""

    id: str
    path: Path
    complete: bool
    checked: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.complete and not self.missing and not self.mismatched

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "ok": self.ok,
            "complete": self.complete,
            "files_checked": self.checked,
            "bytes": self.bytes,
            "missing": self.missing,
            "mismatched": self.mismatched,
            "unexpected": self.unexpected,
        }


@dataclass(frozen=True)
class Removed:
    """Something `cache rm` / `cache prune` deleted (or skipped because it was in use)."""

    path: Path
    bytes: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "reason": self.reason}


def _asset_dirs(root: Path) -> list[tuple[str, Path]]:
    out = []
    for kind in KINDS:
        parent = root / kind_dir(kind)  # type: ignore[arg-type]
        if parent.is_dir():
            out += [(kind, p) for p in sorted(parent.iterdir()) if not p.name.startswith(".")]
    return out


def _known(kind: str, path: Path) -> bool:
    asset = ASSETS.get(path.name)
    return asset is not None and asset.kind == kind and path.is_dir() and not path.is_symlink()


def scan(root: Path) -> list[CacheEntry]:
    """Every asset directory under the cache root, complete or not, known or not."""
    entries = []
    for kind, path in _asset_dirs(root):
        known = _known(kind, path)
        manifest = read_manifest(path) if known else None
        entries.append(
            CacheEntry(
                id=path.name,
                kind=kind,
                path=path,
                bytes=tree_bytes(path),
                complete=manifest is not None,
                known=known,
                files=len(manifest_files(manifest)) if manifest else 0,
                sha256=manifest.get("sha256") if manifest else None,
                created=manifest.get("created") if manifest else None,
            )
        )
    return entries


def _unexpected(path: Path, listed: set[str]) -> list[str]:
    found = []
    for file in sorted(p for p in path.rglob("*") if not p.is_dir()):
        rel = file.relative_to(path).as_posix()
        if rel != MANIFEST and rel not in listed and not is_partial_name(file.name):
            found.append(rel)
    return found


def verify_entry(entry: CacheEntry, advance: Callable[[int], None] | None = None) -> VerifyReport:
    """Re-hash every file the manifest of `entry` lists (holding the asset's lock)."""
    report = VerifyReport(entry.id, entry.path, complete=False)
    with asset_lock(entry.path.parents[1], entry.id):
        manifest = read_manifest(entry.path)
        if manifest is None:
            return report
        report.complete = True
        records = manifest_files(manifest)
        for rec in records:
            file = entry.path / rec.name
            if not file.is_file() or file.is_symlink():
                report.missing.append(rec.name)
                continue
            size = file.stat().st_size
            sha = sha256_file(file, advance) if size == rec.bytes else None
            report.checked += 1
            report.bytes += size
            if sha != rec.sha256:
                report.mismatched.append(rec.name)
        report.unexpected = _unexpected(entry.path, {r.name for r in records})
    return report


def verify(
    root: Path, asset_id: str | None = None, advance: Callable[[int], None] | None = None
) -> list[VerifyReport]:
    """Re-hash one cached asset, or every known one.

    Raises:
        AssetNotCachedError: `asset_id` names nothing in the cache.
    """
    entries = [e for e in scan(root) if e.known and (asset_id is None or e.id == asset_id)]
    if asset_id is not None and not entries:
        _check_id(asset_id)
        raise AssetNotCachedError(
            f"{asset_id} is not in the cache ({root})", hint="see `pointpeft cache ls`"
        )
    return [verify_entry(e, advance) for e in entries]


def _check_id(asset_id: str) -> None:
    if asset_id not in ASSETS:
        from pointpeft_cli.store.registry import get_asset

        get_asset(asset_id)  # raises UsageError with a suggestion


def _staging_of(parent: Path, asset_id: str) -> list[Path]:
    return [p for p in parent.glob(f".{asset_id}.*") if is_partial_name(p.name)]


def remove(root: Path, asset_id: str) -> list[Removed]:
    """Delete a cached asset (and its leftover staging directories), waiting for its lock.

    Raises:
        UsageError: `asset_id` is neither in the registry nor in the cache.
        AssetNotCachedError: a known asset that is not in the cache.
    """
    hits = [p for _kind, p in _asset_dirs(root) if p.name == asset_id]
    if not hits:
        _check_id(asset_id)
        raise AssetNotCachedError(
            f"{asset_id} is not in the cache ({root})", hint="see `pointpeft cache ls`"
        )
    removed = []
    with _maybe_lock(root, asset_id, wait=True):
        for path in hits:
            for victim in [path, *_staging_of(path.parent, asset_id)]:
                size = tree_bytes(victim)
                remove_tree(victim)
                removed.append(Removed(victim, size, "removed"))
    return removed


@contextmanager
def _maybe_lock(root: Path, name: str, wait: bool) -> Iterator[bool]:
    """The asset lock for registry ids; entries the registry does not know need none."""
    if name not in ASSETS:
        yield True
        return
    with asset_lock(root, name, wait=wait) as held:
        yield held


def _prune_dir(kind: str, path: Path) -> list[Removed]:
    if not _known(kind, path):
        size = tree_bytes(path)
        remove_tree(path)
        return [Removed(path, size, "unknown entry")]
    out = []
    for file in sorted(path.rglob("*")):
        if is_partial_name(file.name) and (file.exists() or file.is_symlink()):
            size = tree_bytes(file)
            remove_tree(file)
            out.append(Removed(file, size, "incomplete"))
    if read_manifest(path) is None and not any(path.iterdir()):
        path.rmdir()
        out.append(Removed(path, 0, "empty"))
    return out


def prune(root: Path) -> tuple[list[Removed], list[str]]:
    """Remove `*.incomplete` leftovers and entries the registry does not know.

    Assets whose lock is held by a running download are skipped, not touched.

    Returns:
        (what was removed, ids skipped because they were in use).
    """
    removed: list[Removed] = []
    busy: list[str] = []
    for kind in KINDS:
        parent = root / kind_dir(kind)  # type: ignore[arg-type]
        if not parent.is_dir():
            continue
        for path in sorted(parent.iterdir()):
            hidden = path.name.startswith(".")
            owner = path.name.split(".")[1] if hidden and path.name.count(".") > 1 else path.name
            with _maybe_lock(root, owner, wait=False) as held:
                if not held:
                    busy.append(owner)
                elif hidden:
                    size = tree_bytes(path)
                    remove_tree(path)
                    reason = "incomplete" if is_partial_name(path.name) else "unknown entry"
                    removed.append(Removed(path, size, reason))
                else:
                    removed += _prune_dir(kind, path)
    return removed, sorted(set(busy))
