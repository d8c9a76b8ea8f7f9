"""A small PLY reader: vertex x/y/z from ASCII, binary_little_endian or binary_big_endian files.

Only what point clouds need: any numeric vertex property type, other vertex properties and other
elements (faces, edges, ...) skipped, list properties understood so binary files can be walked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointpeft_cli.errors import CorruptFileError

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


def _bad(path: Path, why: str) -> CorruptFileError:
    return CorruptFileError(f"{path}: not a readable PLY file ({why})", hint="re-export the file")


def _parse_header(path: Path, data: bytes) -> tuple[str, list[tuple[str, int, list]], int]:
    """Format, elements ``(name, count, properties)`` and the byte offset of the body."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise _bad(path, "missing 'ply' magic or 'end_header'")
    body = data.index(b"\n", end) + 1
    fmt, elements = None, []
    for raw in data[:end].decode("ascii", "replace").splitlines()[1:]:
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list" and len(words) == 5:
                elements[-1][2].append((words[4], ("list", words[2], words[3])))
            elif len(words) == 3 and words[1] in _TYPES:
                elements[-1][2].append((words[2], words[1]))
            else:
                raise _bad(path, f"unsupported property line {raw.strip()!r}")
    if fmt not in _FORMATS:
        raise _bad(path, f"unknown format {fmt!r}")
    return fmt, elements, body


def _skip_binary(data: bytes, offset: int, count: int, props: list, order: str) -> int:
    """Byte offset after ``count`` rows of an element that has list properties."""
    for _ in range(count):
        for _, kind in props:
            if isinstance(kind, tuple):
                size_t = np.dtype(order + _TYPES[kind[1]])
                n = int(np.frombuffer(data, size_t, 1, offset)[0])
                offset += size_t.itemsize + n * np.dtype(_TYPES[kind[2]]).itemsize
            else:
                offset += np.dtype(_TYPES[kind]).itemsize
    return offset


def _binary_vertices(path: Path, data: bytes, body: int, elements: list, order: str) -> np.ndarray:
    offset = body
    for name, count, props in elements:
        if name == "vertex":
            if any(isinstance(kind, tuple) for _, kind in props):
                raise _bad(path, "list property on vertices")
            dtype = np.dtype([(p, order + _TYPES[k]) for p, k in props])
            if offset + dtype.itemsize * count > len(data):
                raise _bad(path, "file is truncated")
            rows = np.frombuffer(data, dtype, count, offset)
            return np.stack([rows[a].astype(np.float64) for a in "xyz"], axis=1)
        offset = _skip_binary(data, offset, count, props, order)
    raise _bad(path, "no vertex element")


def _ascii_vertices(path: Path, data: bytes, body: int, elements: list) -> np.ndarray:
    lines = data[body:].splitlines()
    start = 0
    for name, count, props in elements:
        if name == "vertex":
            names = [p for p, _ in props]
            cols = [names.index(a) for a in "xyz"]
            rows = lines[start : start + count]
            if len(rows) < count:
                raise _bad(path, "file is truncated")
            try:
                values = np.array(b" ".join(rows).split(), dtype=np.float64)
                return values.reshape(count, len(names))[:, cols]
            except ValueError as exc:
                raise _bad(path, "vertex rows do not match the header") from exc
        start += count
    raise _bad(path, "no vertex element")


def read_ply(path: Path) -> np.ndarray:
    """Vertex coordinates of a PLY file as float32 ``[N, 3]``.

    Raises:
        CorruptFileError: not PLY, unsupported header, no x/y/z vertex properties, truncated.
    """
    data = Path(path).read_bytes()
    fmt, elements, body = _parse_header(path, data)
    vertex = next((e for e in elements if e[0] == "vertex"), None)
    if vertex is None or not {"x", "y", "z"} <= {p for p, _ in vertex[2]}:
        raise _bad(path, "no vertex element with x, y, z")
    order = _FORMATS[fmt]
    if order is None:
        xyz = _ascii_vertices(path, data, body, elements)
    else:
        xyz = _binary_vertices(path, data, body, elements, order)
    return xyz.astype(np.float32)
