"""Archive and folder import: only regular files, no escapes, hashes recorded as written."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from pointpeft_cli.errors import CorruptFileError, UnsafeFileError
from pointpeft_cli.store.archive import archive_type, copy_tree, safe_extract


def _zip(path: Path, members: dict[str, bytes], modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            zf.writestr(info, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def test_zip_extracts_with_hashes(tmp_path: Path) -> None:
    members = {"top/a.txt": b"alpha", "top/sub/b.bin": os.urandom(5000)}
    records = safe_extract(_zip(tmp_path / "a.zip", members), tmp_path / "out")
    got = {r.name: (r.bytes, r.sha256) for r in records}
    assert got == {k: (len(v), hashlib.sha256(v).hexdigest()) for k, v in members.items()}
    assert (tmp_path / "out/top/sub/b.bin").read_bytes() == members["top/sub/b.bin"]


def test_tar_gz_extracts(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "a.tar.gz", [_info("d", tarfile.DIRTYPE), _info("d/x")], {"d/x": b"x"}
    )
    assert archive_type(archive) == "tar"
    assert [r.name for r in safe_extract(archive, tmp_path / "out")] == ["d/x"]


@pytest.mark.parametrize(
    "name", ["../evil.txt", "ok/../../evil.txt", "/abs/evil.txt", "..\\evil.txt", "C:/evil.txt"]
)
def test_zip_slip_and_absolute_paths_refused(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "bad.zip", {"fine.txt": b"ok", name: b"pwned"})
    with pytest.raises(UnsafeFileError) as err:
        safe_extract(archive, tmp_path / "out" / "deep")
    assert err.value.exit_code == 4 and repr(name) in err.value.message
    assert not list(tmp_path.rglob("evil.txt"))


def test_zip_symlink_member_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "l.zip", {"link": b"/etc/passwd"}, {"link": stat.S_IFLNK | 0o777})
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "link").exists()


@pytest.mark.parametrize(
    ("info", "word"),
    [
        (_info("s", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (_info("h", tarfile.LNKTYPE, "other"), "hard link"),
        (_info("dev", tarfile.CHRTYPE), "special file"),
        (_info("fifo", tarfile.FIFOTYPE), "special file"),
    ],
)
def test_tar_links_devices_fifos_refused(tmp_path: Path, info: tarfile.TarInfo, word: str) -> None:
    archive = _tar(tmp_path / "t.tar.gz", [_info("a"), info], {"a": b"a"})
    with pytest.raises(UnsafeFileError, match=word):
        safe_extract(archive, tmp_path / "out")


def test_duplicate_member_refused(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "d.tar.gz", [_info("a"), _info("a")], {"a": b"a"})
    with pytest.raises(UnsafeFileError, match="twice"):
        safe_extract(archive, tmp_path / "out")


def test_corrupt_archive_is_integrity_error(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "c.zip", {"a.bin": os.urandom(4096)})
    raw = bytearray(archive.read_bytes())
    raw[100] ^= 0xFF  # inside the stored member: the CRC check must catch it
    archive.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError):
        safe_extract(archive, tmp_path / "out")


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"nope" * 100)
    assert archive_type(tmp_path / "x.zip") is None
    with pytest.raises(CorruptFileError):
        safe_extract(tmp_path / "x.zip", tmp_path / "out")


def test_copy_tree_copies_regular_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f.txt").write_bytes(b"data")
    records = copy_tree(src, tmp_path / "dst")
    assert [(r.name, r.bytes) for r in records] == [("a/b/f.txt", 4)]
    assert (tmp_path / "dst/a/b/f.txt").read_bytes() == b"data"


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_copy_tree_refuses_links_and_fifos(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok")
    if kind == "symlink":
        (src / "link").symlink_to(tmp_path)
    else:
        os.mkfifo(src / "link")
    with pytest.raises(UnsafeFileError, match="symbolic link" if kind == "symlink" else "special"):
        copy_tree(src, tmp_path / "dst")
