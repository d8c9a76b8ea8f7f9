"""`download` engine: obtain, verify, convert or extract, write the manifest, commit atomically."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from pointpeft_cli import __version__
from pointpeft_cli.errors import ChecksumMismatchError, CorruptFileError, UsageError
from pointpeft_cli.store.archive import archive_type, safe_extract
from pointpeft_cli.store.cache import (
    FileRecord,
    asset_dir,
    commit_dir,
    manifest_files,
    new_staging,
    read_manifest,
    recover_interrupted,
    write_manifest,
)
from pointpeft_cli.store.checkpoint import (
    SAFETENSORS_NAME,
    check_layout,
    read_checkpoint,
    write_safetensors,
)
from pointpeft_cli.store.download import FetchOptions, TransferProgress, ensure_online
from pointpeft_cli.store.hashing import sha256_file
from pointpeft_cli.store.layouts import load_layout
from pointpeft_cli.store.locking import asset_lock
from pointpeft_cli.store.registry import Asset, get_asset
from pointpeft_cli.store.sources import Obtained, Source, obtain, resolve_source


@dataclass(frozen=True)
class InstallOptions:
    """Flags of `pointpeft download` that shape one install."""

    source: str | None = None
    force: bool = False
    offline: bool = False
    trust_pickle: bool = False
    insecure_tls: bool = False
    timeout: float = 60.0
    max_attempts: int = 4


@dataclass(frozen=True)
class InstallResult:
    """What `install_asset` did; `to_json` is the per-asset object of `download --json`."""

    asset_id: str
    path: Path
    status: str  # downloaded | imported | cached
    files: tuple[FileRecord, ...]
    sha256: str
    trust_on_first_use: bool
    pinned_now: bool  # this run recorded the sha256 (first download, or --force over a change)
    replaced_sha256: str | None
    converted: str | None
    source: str
    resumed: bool = False
    waited: bool = False
    insecure_tls: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.asset_id,
            "path": str(self.path),
            "status": self.status,
            "files": [f.to_json() for f in self.files],
            "verified": True,
            "sha256": self.sha256,
            "trust_on_first_use": self.trust_on_first_use,
            "pinned_now": self.pinned_now,
            "replaced_sha256": self.replaced_sha256,
            "converted": self.converted,
            "source": self.source,
            "resumed": self.resumed,
            "insecure_tls": self.insecure_tls,
        }


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cached(asset: Asset, final: Path, manifest: dict[str, Any], waited: bool) -> InstallResult:
    return InstallResult(
        asset_id=asset.id,
        path=final,
        status="cached",
        files=tuple(manifest_files(manifest)),
        sha256=str(manifest["sha256"]),
        trust_on_first_use=bool(manifest.get("trust_on_first_use")),
        pinned_now=False,
        replaced_sha256=None,
        converted=(manifest.get("conversion") or {}).get("to"),
        source=str(manifest.get("source", {}).get("location", "")),
        waited=waited,
    )


def _convert_checkpoint(
    asset: Asset, got: Obtained, content: Path, opts: InstallOptions
) -> tuple[list[FileRecord], dict[str, Any]]:
    layout = asset.file.layout
    assert layout is not None, f"checkpoint asset {asset.id} has no layout"
    original = content / asset.file.name
    got.path.replace(original)
    loaded = read_checkpoint(original, trust_pickle=opts.trust_pickle)
    check_layout(loaded.state, load_layout(layout), asset.file.name, layout)
    target = content / SAFETENSORS_NAME
    meta = {"asset": asset.id, "layout": layout, "source_sha256": got.sha256}
    write_safetensors(loaded.state, target, meta)
    files = [
        FileRecord(asset.file.name, got.bytes, got.sha256),
        FileRecord(SAFETENSORS_NAME, target.stat().st_size, sha256_file(target)),
    ]
    conversion = {
        "from": asset.file.name,
        "to": SAFETENSORS_NAME,
        "layout": layout,
        "tensors": len(loaded.state),
        "container_key": loaded.container_key,
        "stripped_prefix": loaded.stripped_prefix,
        "pickle_trusted": opts.trust_pickle,
    }
    return files, conversion


def _content_root(asset: Asset, records: list[FileRecord]) -> PurePosixPath:
    """The folder inside an import that holds the asset (archives often add a top folder)."""
    names = {r.name for r in records}
    marker = asset.required[0] if asset.required else None
    candidates = sorted(
        (PurePosixPath(n[: -len(marker)]) for n in names if marker and n.endswith("/" + marker)),
        key=lambda p: len(p.parts),
    )
    root = PurePosixPath() if marker in names or not candidates else candidates[0]
    missing = [r for r in asset.required if (root / r).as_posix() not in names]
    if missing:
        more = f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""
        shown = ", ".join(missing[:4]) + more
        raise CorruptFileError(
            f"the import does not contain {asset.id}: missing {shown}",
            hint=asset.howto,
        )
    return root


def _unpack_dataset(
    asset: Asset, got: Obtained, staging: Path, progress: TransferProgress | None
) -> tuple[Path, list[FileRecord], str | None]:
    if got.records:  # a folder import: already copied and hashed
        tree, records = got.path, list(got.records)
    else:
        if archive_type(got.path) is None:
            raise CorruptFileError(f"{got.path.name} is not a zip or tar archive", hint=asset.howto)
        tree = staging / "tree"
        advance = None
        if progress is not None:
            progress.start(f"extracting {asset.id}", None)
            advance = progress.advance
        records = safe_extract(got.path, tree, advance)
    root = _content_root(asset, records)
    prefix = "" if not root.parts else root.as_posix() + "/"
    inside = [
        FileRecord(r.name[len(prefix) :], r.bytes, r.sha256)
        for r in records
        if r.name.startswith(prefix)
    ]
    return tree.joinpath(*root.parts), inside, root.as_posix() if root.parts else None


def _check_insecure(asset: Asset, opts: InstallOptions) -> None:
    if opts.insecure_tls and not asset.insecure_tls_ok:
        raise UsageError(
            f"--insecure-tls is not allowed for {asset.id}: its host's certificate is valid",
            hint="it exists only for assets on shapenet.cs.stanford.edu (expired certificate)",
        )


def _check_against(
    asset: Asset, existing: dict[str, Any] | None, got: Obtained, opts: InstallOptions
) -> bool:
    """True when the cached copy is the same file; raise when it differs and --force is off."""
    if existing is None:
        return False
    if got.sha256 == existing.get("sha256"):
        return not opts.force
    if not opts.force:
        raise ChecksumMismatchError(
            f"{asset.id}: the new file's sha256 {got.sha256} differs from the one recorded on "
            f"first download ({existing.get('sha256')})",
            hint="the cached copy is kept; pass --force to replace it and trust the new file",
        )
    return False


def _build(
    asset: Asset, got: Obtained, staging: Path, opts: InstallOptions, progress: Any
) -> tuple[Path, list[FileRecord], dict[str, Any]]:
    """Turn the obtained bytes into the final asset tree; returns (dir, files, manifest extras)."""
    if asset.kind == "checkpoint":
        content = staging / "content"
        content.mkdir()
        files, conversion = _convert_checkpoint(asset, got, content, opts)
        return content, files, {"conversion": conversion}
    content, files, root = _unpack_dataset(asset, got, staging, progress)
    return content, files, {"conversion": None, "content_root": root}


def _manifest(
    asset: Asset, src: Source, got: Obtained, files: list[FileRecord], extra: dict[str, Any]
) -> dict[str, Any]:
    name = asset.file.name if src.kind == "url" else Path(src.location).name
    return {
        "asset": asset.id,
        "kind": asset.kind,
        "created": _now(),
        "pointpeft_version": __version__,
        "source": {"type": src.kind, "location": src.location, "name": name, "bytes": got.bytes},
        "sha256": got.sha256,
        "sha256_of": "tree" if src.kind == "dir" else "file",
        "trust_on_first_use": src.kind == "dir" or asset.file.sha256 is None,
        "files": [f.to_json() for f in files],
        **extra,
    }


def _install_locked(
    asset: Asset, src: Source, root: Path, opts: InstallOptions, progress: Any, waited: bool
) -> InstallResult:
    final = asset_dir(root, asset)
    recover_interrupted(root, asset)  # a killed install's leftovers (we hold the lock)
    existing = read_manifest(final)
    if existing is not None and not opts.force and opts.source is None:
        return _cached(asset, final, existing, waited)
    if src.kind == "url":
        ensure_online(_fetch_opts(asset, opts), src.location)
    fresh = [p for p in (final.parent, final) if not p.exists()]
    staging = new_staging(root, asset)
    try:
        got = obtain(asset, src, final, staging, _fetch_opts(asset, opts), progress)
        if _check_against(asset, existing, got, opts):
            return _cached(asset, final, existing or {}, waited)
        content, files, extra = _build(asset, got, staging, opts, progress)
        manifest = _manifest(asset, src, got, files, extra)
        write_manifest(content, manifest)  # last file written: marks the staged tree complete
        commit_dir(content, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for path in reversed(fresh):  # leave no empty directory behind a failed first import
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    old = existing.get("sha256") if existing else None
    return InstallResult(
        asset_id=asset.id,
        path=final,
        status="downloaded" if src.kind == "url" else "imported",
        files=tuple(files),
        sha256=got.sha256,
        trust_on_first_use=bool(manifest["trust_on_first_use"]),
        pinned_now=bool(manifest["trust_on_first_use"]) and old != got.sha256,
        replaced_sha256=old if old != got.sha256 else None,
        converted=SAFETENSORS_NAME if asset.kind == "checkpoint" else None,
        source=src.location,
        resumed=got.resumed,
        waited=waited,
        insecure_tls=opts.insecure_tls and src.insecure_host,
    )


def _fetch_opts(asset: Asset, opts: InstallOptions) -> FetchOptions:
    return FetchOptions(
        asset_id=asset.id,
        offline=opts.offline,
        insecure_tls=opts.insecure_tls,
        timeout=opts.timeout,
        max_attempts=opts.max_attempts,
    )


def install_asset(
    root: Path,
    asset_id: str,
    opts: InstallOptions | None = None,
    progress: TransferProgress | None = None,
    on_wait: Callable[[], None] | None = None,
) -> InstallResult:
    """Download or import one asset into the cache, verified, under the asset's lock.

    A concurrent call for the same asset waits for the lock and then finds the asset complete.
    On any failure the cache keeps its previous state, except a partial download, which stays
    (as `*.incomplete`) for the next call to resume.

    Raises:
        UsageError: unknown asset, bad `--from`, or a disallowed `--insecure-tls` (exit 2).
        AssetUnavailableError: offline, network failure, manual asset, no disk space (exit 3).
        IntegrityError: size/sha256/layout mismatch, corrupt or unsafe file (exit 4).
    """
    opts = opts or InstallOptions()
    asset = get_asset(asset_id)
    if asset.kind == "embedded":
        raise UsageError(f"{asset.id} ships inside the package; there is nothing to download")
    src = resolve_source(asset, opts.source)
    _check_insecure(asset, opts)
    waited: list[bool] = []

    def _waiting() -> None:
        waited.append(True)
        if on_wait is not None:
            on_wait()

    with asset_lock(root, asset.id, on_wait=_waiting):
        return _install_locked(asset, src, root, opts, progress, bool(waited))
