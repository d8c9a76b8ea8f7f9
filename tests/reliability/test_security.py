"""Nothing is unpickled without explicit opt-in; archives cannot escape; TLS stays on.

The pickle tests use a payload whose unpickling writes a marker file: if any code path
unpickled it, the marker would exist.
"""

from __future__ import annotations

import ast
import io
import pickle
import ssl
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli_helpers import run_cli
from tests.reliability.harness import (
    TINY,
    assert_clean_failure,
    assert_unchanged,
    tree_snapshot,
)

PACKAGE = Path(__file__).resolve().parents[2] / "pointpeft_cli"


class Payload:
    """Unpickling this runs `exec`, which writes `marker` (a stand-in for any attack)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "MARKER"
    pickle.loads(pickle.dumps(Payload(path)))  # the payload really works ...
    assert path.read_text() == "unpickled"
    path.unlink()  # ... and each test starts without the marker
    return path


def refused(marker: Path, roots: list[Path], *args: str) -> dict:
    before = tree_snapshot(*roots)
    error = assert_clean_failure(run_cli(*args, "--json"), 4)
    assert not marker.exists(), "the malicious pickle was unpickled"
    assert_unchanged(before, tree_snapshot(*roots))
    return error


def _evil_torch_zip(path: Path, marker: Path) -> Path:
    torch.save({"base_model": {"w": torch.zeros(2)}, "extra": Payload(marker)}, path)
    return path


def _evil_raw(path: Path, marker: Path, protocol: int) -> Path:
    with path.open("wb") as fh:
        pickle.dump({"base_model": {"w": Payload(marker)}}, fh, protocol=protocol)
    return path


@pytest.mark.parametrize("kind", ["torch-zip", "pickle-p2", "pickle-p0"])
def test_malicious_pth_is_refused_everywhere(
    kind: str, marker: Path, tmp_path: Path, cache_home: Path
) -> None:
    path = tmp_path / "pretrain.pth"
    if kind == "torch-zip":
        _evil_torch_zip(path, marker)
    else:
        _evil_raw(path, marker, 2 if kind == "pickle-p2" else 0)
    roots = [cache_home, tmp_path]
    error = refused(marker, roots, "download", "point-mae", "--from", str(path))
    assert "pretrain.pth" in error["message"]
    out = tmp_path / "run"
    refused(marker, [*roots, out], "finetune", *TINY, "--out", str(out), "--set",
            f"model.checkpoint={path}")  # fmt: skip
    refused(marker, roots, "inspect", "--backbone", "point-mae-mini", "--task", "shapes",
            "--checkpoint", str(path))  # fmt: skip


def test_trust_pickle_is_the_only_way_in(marker: Path, tmp_path: Path) -> None:
    """The same file is unpickled only when the user passes --trust-pickle."""
    path = _evil_torch_zip(tmp_path / "pretrain.pth", marker)
    res = run_cli("download", "point-mae", "--from", str(path), "--trust-pickle", "--json")
    assert marker.exists()  # opt-in honoured (the layout check then rejects the file)
    assert_clean_failure(res, 4, "layout")


def test_malicious_resume_state_is_refused(marker: Path, run_dir: Path, cache_home: Path) -> None:
    _evil_torch_zip(run_dir / "checkpoints" / "last.pt", marker)
    error = refused(marker, [cache_home, run_dir], "finetune", "--resume", "--out", str(run_dir))
    assert "last.pt" in error["message"]


def test_malicious_dat_is_refused(marker: Path, tmp_path: Path, cache_home: Path) -> None:
    from pointpeft_cli.tasks import MODELNET40_CLASSES

    root = tmp_path / "modelnet40"
    root.mkdir()
    (root / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    for split in ("train", "test"):
        (root / f"modelnet40_{split}.txt").write_text("")
        with (root / f"modelnet40_{split}_8192pts_fps.dat").open("wb") as fh:
            pickle.dump([[Payload(marker)], [np.array([0])]], fh)
    error = refused(marker, [cache_home, root], "build-memory-bank", "--task", "modelnet40",
                    "--data-dir", str(root), "--set", "model.pretrained=false")  # fmt: skip
    assert ".dat" in error["message"] and "trust-pickle" in error["message"]


def test_malicious_fewshot_pkl_is_refused(marker: Path, tmp_path: Path, cache_home: Path) -> None:
    path = tmp_path / "ModelNetFewshot" / "5way_10shot" / "0.pkl"
    path.parent.mkdir(parents=True)
    with path.open("wb") as fh:
        pickle.dump({"train": [Payload(marker)], "test": [Payload(marker)]}, fh)
    error = refused(marker, [cache_home, tmp_path], "finetune", "--task", "modelnet40-fewshot",
                    "--data-dir", str(tmp_path), "--set", "model.pretrained=false", "--out",
                    str(tmp_path / "run"))  # fmt: skip
    assert "0.pkl" in error["message"]


def test_object_npy_is_refused(marker: Path, adapter: Path, tmp_path: Path) -> None:
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, np.array([Payload(marker)] * 3, dtype=object), allow_pickle=True)
    error = refused(marker, [adapter], "predict", "--adapter", str(adapter), str(cloud))
    assert "cloud.npy" in error["message"]


# ---- the source itself: no unsafe loaders, no shell -------------------------------------------


def _calls(tree: ast.AST):  # type: ignore[no-untyped-def]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _kw(call: ast.Call, name: str) -> str | None:
    return next((ast.unparse(k.value) for k in call.keywords if k.arg == name), None)


def _functions(tree: ast.AST) -> dict[int, str]:
    """Line -> name of the innermost function defined around it."""
    spans = sorted(
        (n.lineno, n.end_lineno or n.lineno, n.name)
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    )
    owner: dict[int, str] = {}
    for start, end, name in spans:  # sorted by start: an inner function overwrites its outer
        for line in range(start, end + 1):
            owner[line] = name
    return owner


# The one place that unpickles arbitrary objects, each after an explicit --trust-pickle check.
OPT_IN = {("store/checkpoint.py", "_load_pickled"), ("data/modelnet40_raw.py", "_unpickle")}


def test_source_never_unpickles_or_shells_out_unasked() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        owner = _functions(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("subprocess", "pty", "dill", "cloudpickle")
                       for n in names):  # fmt: skip
                    problems.append(f"{rel}:{node.lineno} imports {names}")
        for call, name in _calls(tree):
            where = (rel, owner.get(call.lineno))
            line = f"{rel}:{call.lineno} {name}"
            if name == "torch.load" and _kw(call, "weights_only") != "True" and where not in OPT_IN:
                problems.append(f"{line} without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler") and where not in OPT_IN:
                problems.append(f"{line} outside the opt-in loaders")
            if name in ("np.load", "numpy.load") and _kw(call, "allow_pickle") != "False":
                problems.append(f"{line} without allow_pickle=False")
            if name in ("yaml.load", "yaml.unsafe_load", "eval", "exec", "os.system",
                        "os.popen") or name.startswith(("os.exec", "os.spawn")):  # fmt: skip
                problems.append(line)
            if _kw(call, "shell") == "True":
                problems.append(f"{line} with shell=True")
    assert not problems, "\n".join(problems)


def test_tls_verification_is_on_by_default() -> None:
    from pointpeft_cli.store import download
    from pointpeft_cli.store.install import InstallOptions

    assert download.FetchOptions("x").insecure_tls is False
    assert InstallOptions().insecure_tls is False
    handler = next(h for h in download._opener(False).handlers if hasattr(h, "_context"))
    assert handler._context.verify_mode == ssl.CERT_REQUIRED
    assert handler._context.check_hostname is True
    source = (PACKAGE / "store" / "download.py").read_text()
    assert source.count("CERT_NONE") == 1  # only behind `if insecure:` in _opener


# ---- archives --------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("modelnet40_normal_resampled/modelnet40_shape_names.txt", "airplane\n")
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if name == link:
                info.external_attr = (0o120777) << 16  # a symlink member
            zf.writestr(info, data)
    return path


def _tar(path: Path, kind: bytes, name: str, link: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        data = b"airplane\n"
        info = tarfile.TarInfo("modelnet40_normal_resampled/modelnet40_shape_names.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        bad = tarfile.TarInfo(name)
        bad.type, bad.linkname = kind, link
        tf.addfile(bad)
    return path


ARCHIVES = {
    "dotdot": lambda p: _zip(p.with_suffix(".zip"), {"../../escaped.txt": b"x"}),
    "absolute": lambda p: _zip(p.with_suffix(".zip"), {"/tmp/pointpeft-abs.txt": b"x"}),
    "zip-symlink": lambda p: _zip(p.with_suffix(".zip"), {"m/link": b"/etc/passwd"}, "m/link"),
    "tar-symlink": lambda p: _tar(p.with_suffix(".tar.gz"), tarfile.SYMTYPE, "m/l", "/etc"),
    "tar-hardlink": lambda p: _tar(p.with_suffix(".tar.gz"), tarfile.LNKTYPE, "m/h", "/etc/x"),
    "tar-device": lambda p: _tar(p.with_suffix(".tar.gz"), tarfile.CHRTYPE, "m/dev"),
    "tar-fifo": lambda p: _tar(p.with_suffix(".tar.gz"), tarfile.FIFOTYPE, "m/fifo"),
}


@pytest.mark.parametrize("case", list(ARCHIVES))
def test_unsafe_archives_are_refused(case: str, tmp_path: Path, cache_home: Path) -> None:
    archive = ARCHIVES[case](tmp_path / "data")
    before = tree_snapshot(cache_home, tmp_path)
    res = run_cli("download", "modelnet40", "--from", str(archive), "--json")
    error = assert_clean_failure(res, 4)
    assert error["type"] == "UnsafeFileError"
    assert_unchanged(before, tree_snapshot(cache_home, tmp_path))
    assert not Path("/tmp/pointpeft-abs.txt").exists()
    assert not (tmp_path.parent / "escaped.txt").exists()
