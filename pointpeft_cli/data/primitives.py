"""Surface sampling of composite objects built from primitives, vectorised over all parts.

A part row is ``[kind, a, b, c, d, rx, ry, rz, tx, ty, tz]`` (local shape parameters, Euler
rotation in radians applied x then y then z, translation). Kinds and parameters:

* ``BOX``: half-extents ``a, b, c``.
* ``FRUSTUM`` (cylinder, cone, lampshade) along y, centred: bottom radius ``a``, height ``b``,
  top radius ``a * c``; ``d`` = caps (0 none, 1 bottom, 2 top, 3 both).
* ``ELLIPSOID``: semi-axes ``a, b, c``.
* ``TORUS`` in the xz plane: major radius ``a``, minor ``b``, arc fraction ``c`` of a full turn.
"""

from __future__ import annotations

import numpy as np

BOX, FRUSTUM, ELLIPSOID, TORUS = 0, 1, 2, 3


class Parts:
    """Collects part rows for one object."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, ...]] = []

    def add(self, kind, a, b, c, d=0.0, at=(0.0, 0.0, 0.0), rot=(0.0, 0.0, 0.0)) -> None:
        self.rows.append((kind, a, b, c, d, *rot, *at))

    def box(self, hx, hy, hz, at, rot=(0.0, 0.0, 0.0)) -> None:
        self.add(BOX, hx, hy, hz, 0.0, at, rot)

    def frustum(self, r, h, at, top=1.0, caps=3, rot=(0.0, 0.0, 0.0)) -> None:
        self.add(FRUSTUM, r, h, top, caps, at, rot)

    def ellipsoid(self, a, b, c, at, rot=(0.0, 0.0, 0.0)) -> None:
        self.add(ELLIPSOID, a, b, c, 0.0, at, rot)

    def torus(self, major, minor, at, frac=1.0, rot=(0.0, 0.0, 0.0)) -> None:
        self.add(TORUS, major, minor, frac, 0.0, at, rot)

    def array(self) -> np.ndarray:
        return np.asarray(self.rows, dtype=np.float64)


def rotation_matrices(angles: np.ndarray) -> np.ndarray:
    """``[K, 3, 3]`` matrices ``Rz @ Ry @ Rx`` from ``[K, 3]`` Euler angles."""
    cx, cy, cz = np.cos(angles).T
    sx, sy, sz = np.sin(angles).T
    return np.stack(
        [
            np.stack([cy * cz, sx * sy * cz - cx * sz, cx * sy * cz + sx * sz], -1),
            np.stack([cy * sz, sx * sy * sz + cx * cz, cx * sy * sz - sx * cz], -1),
            np.stack([-sy, sx * cy, cx * cy], -1),
        ],
        axis=1,
    )


def _frustum_areas(a, b, c, d):
    top = a * c
    lateral = np.pi * (a + top) * np.sqrt((a - top) ** 2 + b**2)
    bottom = np.pi * a**2 * (d % 2 == 1)
    cap = np.pi * top**2 * (d >= 2)
    return lateral, bottom, cap


def areas(rows: np.ndarray) -> np.ndarray:
    """Approximate surface area of each part."""
    kind, a, b, c, d = rows[:, :5].T
    box = 8 * (a * b + b * c + c * a)
    p = 1.6  # Knud Thomsen's ellipsoid approximation
    ell = 4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
    fr = sum(_frustum_areas(a, b, c, d))
    tor = 4 * np.pi**2 * a * b * c
    return np.select([kind == BOX, kind == FRUSTUM, kind == ELLIPSOID], [box, fr, ell], tor)


def _box(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ext = p[:, 1:4]
    face = np.stack([ext[:, 1] * ext[:, 2], ext[:, 0] * ext[:, 2], ext[:, 0] * ext[:, 1]], 1)
    cum = np.cumsum(face, 1)
    u = rng.random(len(p)) * cum[:, 2]
    axis = (u > cum[:, 0]).astype(int) + (u > cum[:, 1])
    out = (rng.random((len(p), 3)) * 2 - 1) * ext
    sign = np.where(rng.random(len(p)) < 0.5, -1.0, 1.0)
    rows = np.arange(len(p))
    out[rows, axis] = sign * ext[rows, axis]
    return out


def _frustum(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a, b, c, d = p[:, 1], p[:, 2], p[:, 3], p[:, 4]
    lateral, bottom, cap = _frustum_areas(a, b, c, d)
    u = rng.random(len(p)) * (lateral + bottom + cap)
    theta = rng.random(len(p)) * 2 * np.pi
    top = a * c
    # Lateral: radius density grows linearly with radius, so sample r^2 uniformly.
    r2 = rng.random(len(p)) * (a**2 - top**2) + top**2
    r = np.sqrt(r2)
    span = a - top
    t = np.where(np.abs(span) > 1e-9, (a - r) / np.where(span == 0, 1, span), rng.random(len(p)))
    r = np.where(np.abs(span) > 1e-9, r, a)
    y = (t - 0.5) * b
    disc = np.sqrt(rng.random(len(p)))
    on_bottom = (u >= lateral) & (u < lateral + bottom)
    on_top = u >= lateral + bottom
    r = np.where(on_bottom, a * disc, np.where(on_top, top * disc, r))
    y = np.where(on_bottom, -0.5 * b, np.where(on_top, 0.5 * b, y))
    return np.stack([r * np.cos(theta), y, r * np.sin(theta)], 1)


def _ellipsoid(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((len(p), 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-12
    return v * p[:, 1:4]


def _torus(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    major, minor, frac = p[:, 1], p[:, 2], p[:, 3]
    theta = rng.random(len(p)) * 2 * np.pi * frac
    phi = rng.random(len(p)) * 2 * np.pi
    ring = major + minor * np.cos(phi)
    return np.stack([ring * np.cos(theta), minor * np.sin(phi), ring * np.sin(theta)], 1)


_SAMPLERS = {BOX: _box, FRUSTUM: _frustum, ELLIPSOID: _ellipsoid, TORUS: _torus}


def sample_surface(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points spread over the parts' surfaces in proportion to area, ``[n, 3]`` float64."""
    weight = areas(rows)
    part = np.searchsorted(np.cumsum(weight), rng.random(n) * weight.sum(), side="right")
    part = np.minimum(part, len(rows) - 1)
    per_point = rows[part]
    local = np.empty((n, 3))
    for kind in np.unique(per_point[:, 0]).astype(int):
        mask = per_point[:, 0] == kind
        local[mask] = _SAMPLERS[kind](per_point[mask], rng)
    rot = rotation_matrices(rows[:, 5:8])[part]
    return np.einsum("nij,nj->ni", rot, local) + per_point[:, 8:11]
