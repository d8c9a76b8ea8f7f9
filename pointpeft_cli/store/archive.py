"""Safe import of archives and directory trees: member by member, regular files only, hashed."""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Literal

from pointpeft_cli.errors import CorruptFileError, UnsafeFileError
from pointpeft_cli.store.cache import FileRecord, ensure_free_space
from pointpeft_cli.store.hashing import write_hashed

Advance = Callable[[int], None] | None
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNSAFE_HINT = "nothing was extracted; check the archive, unpack it yourself, import the folder"


def archive_type(path: Path) -> Literal["zip", "tar"] | None:
    """`zip` or `tar` (any compression) judged by content, or None for other files."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        return "tar" if tarfile.is_tarfile(path) else None
    except OSError:
        return None


def safe_member_path(name: str, archive: Path) -> PurePosixPath:
    """The relative path of an archive member, refusing absolute paths and `..`.

    Backslashes count as separators so Windows-style `..\\` tricks are caught too.
    """
    clean = name.replace("\\", "/")
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if clean.startswith("/") or _DRIVE.match(clean) or "\0" in clean:
        raise UnsafeFileError(
            f"{archive.name}: member {name!r} has an absolute path", hint=_UNSAFE_HINT
        )
    if ".." in parts:
        raise UnsafeFileError(
            f"{archive.name}: member {name!r} points outside the archive (..)", hint=_UNSAFE_HINT
        )
    return PurePosixPath(*parts)


def _target(dest: Path, rel: PurePosixPath, seen: set[PurePosixPath], archive: Path) -> Path:
    if rel in seen:
        raise UnsafeFileError(f"{archive.name}: member {rel} appears twice", hint=_UNSAFE_HINT)
    seen.add(rel)
    target = dest.joinpath(*rel.parts)
    if not os.path.realpath(target).startswith(os.path.realpath(dest) + os.sep):
        raise UnsafeFileError(f"{archive.name}: member {rel} escapes the target", hint=_UNSAFE_HINT)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if info.is_dir():
        return "dir"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return "special file"
    return "file"


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "dir"
    if member.isreg():
        return "file"
    if member.issym():
        return "symbolic link"
    return "hard link" if member.islnk() else "special file"


def _refuse(archive: Path, name: str, kind: str) -> UnsafeFileError:
    return UnsafeFileError(f"{archive.name}: member {name!r} is a {kind}", hint=_UNSAFE_HINT)


@contextmanager
def _corrupt_as_error(archive: Path) -> Iterator[None]:
    try:
        yield
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise CorruptFileError(
            f"{archive.name} is corrupt: {exc}", hint="download it again or use another copy"
        ) from None


def _extract_zip(archive: Path, dest: Path, advance: Advance) -> list[FileRecord]:
    records: list[FileRecord] = []
    seen: set[PurePosixPath] = set()
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        ensure_free_space(dest, int(sum(i.file_size for i in infos) * 1.1), archive.name)
        for info in infos:
            rel, kind = safe_member_path(info.filename, archive), _zip_kind(info)
            if kind not in ("file", "dir"):
                raise _refuse(archive, info.filename, kind)
            if kind == "dir" or not rel.parts:
                dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
                continue
            with zf.open(info) as src:  # zipfile checks the CRC at the end of each member
                size, sha = write_hashed(src, _target(dest, rel, seen, archive), advance)
            records.append(FileRecord(rel.as_posix(), size, sha))
    return records


def _extract_tar(archive: Path, dest: Path, advance: Advance) -> list[FileRecord]:
    records: list[FileRecord] = []
    seen: set[PurePosixPath] = set()
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        ensure_free_space(dest, int(sum(m.size for m in members) * 1.1), archive.name)
        for member in members:
            rel, kind = safe_member_path(member.name, archive), _tar_kind(member)
            if kind not in ("file", "dir"):
                raise _refuse(archive, member.name, kind)
            if kind == "dir" or not rel.parts:
                dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
                continue
            src = tf.extractfile(member)
            assert src is not None  # regular members always have data
            with src:
                size, sha = write_hashed(src, _target(dest, rel, seen, archive), advance)
            records.append(FileRecord(rel.as_posix(), size, sha))
    return records


def safe_extract(archive: Path, dest: Path, advance: Advance = None) -> list[FileRecord]:
    """Extract a zip or tar archive into `dest`, hashing every file as it is written.

    Only regular files and directories are accepted; absolute paths, `..`, symbolic and hard
    links, device files and fifos make the whole import fail (`UnsafeFileError`, exit 4).

    Returns:
        One record per extracted file (path relative to `dest`).
    """
    kind = archive_type(archive)
    if kind is None:
        raise CorruptFileError(
            f"{archive.name} is neither a zip nor a tar archive",
            hint="import the extracted folder, or the original .zip/.tar file",
        )
    dest.mkdir(parents=True, exist_ok=True)
    with _corrupt_as_error(archive):
        if kind == "zip":
            return _extract_zip(archive, dest, advance)
        return _extract_tar(archive, dest, advance)


def copy_tree(src: Path, dest: Path, advance: Advance = None) -> list[FileRecord]:
    """Copy the regular files under `src` into `dest`, hashing them; links and devices refused.

    Returns:
        One record per copied file (path relative to `dest`).
    """
    records: list[FileRecord] = []
    dest.mkdir(parents=True, exist_ok=True)
    pending = [PurePosixPath()]
    while pending:
        rel_dir = pending.pop()
        with os.scandir(src.joinpath(*rel_dir.parts)) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = rel_dir / entry.name
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                dest.joinpath(*rel.parts).mkdir(exist_ok=True)
                pending.append(rel)
            elif stat.S_ISREG(mode):
                with open(entry.path, "rb") as fh:
                    size, sha = write_hashed(fh, dest.joinpath(*rel.parts), advance)
                records.append(FileRecord(rel.as_posix(), size, sha))
            else:
                kind = "symbolic link" if stat.S_ISLNK(mode) else "special file"
                raise UnsafeFileError(
                    f"{src / rel} is a {kind}; only regular files are imported",
                    hint="replace links by the files they point to, or import the target folder",
                )
    return records
