"""Builders for the 12 ``shapes`` classes: composite objects with random proportions and parts.

Each builder takes a ``numpy.random.Generator`` and returns a :class:`Parts` in a y-up frame
with the object roughly within a unit box. Classes share parts on purpose (stool/table/chair,
bottle/lamp/mug, bed/sofa) so that they are genuinely confusable.
"""

from __future__ import annotations

import numpy as np

from pointpeft_cli.data.primitives import Parts


def _legs(p: Parts, rng, hx: float, hz: float, height: float, n: int, round_: bool) -> None:
    """``n`` (3 or 4) legs under a top of half-size ``hx, hz`` whose underside is at ``height``."""
    w = rng.uniform(0.015, 0.04)
    splay = rng.uniform(0.0, 0.12)
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + (np.pi / 4 if n == 4 else 0)
    for ang in angles:
        x, z = np.cos(ang) * hx * 0.85, np.sin(ang) * hz * 0.85
        rot = (np.sin(ang) * splay, 0.0, -np.cos(ang) * splay)
        at = (x, height / 2, z)
        if round_:
            p.frustum(w, height, at, top=rng.uniform(0.7, 1.0), caps=0, rot=rot)
        else:
            p.box(w, height / 2, w, at, rot)


def table(rng) -> Parts:
    p = Parts()
    h = rng.uniform(0.55, 0.8)
    t = rng.uniform(0.015, 0.04)
    if rng.random() < 0.35:  # round, often on a pedestal
        r = rng.uniform(0.35, 0.65)
        p.frustum(r, 2 * t, (0, h, 0))
        if rng.random() < 0.5:
            p.frustum(rng.uniform(0.03, 0.07), h, (0, h / 2, 0), caps=0)
            p.frustum(r * rng.uniform(0.4, 0.7), 0.03, (0, 0.015, 0))
        else:
            _legs(p, rng, r * 0.8, r * 0.8, h - t, int(rng.choice([3, 4])), True)
    else:
        hx, hz = rng.uniform(0.45, 0.9), rng.uniform(0.3, 0.6)
        p.box(hx, t, hz, (0, h, 0))
        _legs(p, rng, hx, hz, h - t, 4, rng.random() < 0.3)
        if rng.random() < 0.25:
            p.box(hx * 0.8, t * 0.7, hz * 0.8, (0, h * rng.uniform(0.2, 0.4), 0))
    return p


def stool(rng) -> Parts:
    p = Parts()
    h = rng.uniform(0.45, 0.8)
    r = rng.uniform(0.14, 0.24)
    t = rng.uniform(0.02, 0.05)
    if rng.random() < 0.7:
        p.frustum(r, 2 * t, (0, h, 0))
    else:
        p.box(r, t, r, (0, h, 0))
    _legs(p, rng, r, r, h - t, int(rng.choice([3, 4])), rng.random() < 0.6)
    if rng.random() < 0.5:
        p.torus(r * 0.9, 0.012, (0, h * rng.uniform(0.25, 0.45), 0))
    return p


def chair(rng) -> Parts:
    p = Parts()
    s = rng.uniform(0.2, 0.3)
    h = rng.uniform(0.38, 0.5)
    t = rng.uniform(0.02, 0.05)
    p.box(s, t, s, (0, h, 0))
    if rng.random() < 0.2:  # office chair: pedestal and star base
        p.frustum(0.03, h, (0, h / 2, 0), caps=0)
        for k in range(5):
            a = 2 * np.pi * k / 5
            at = (np.cos(a) * s * 0.5, 0.03, np.sin(a) * s * 0.5)
            p.box(s * 0.5, 0.015, 0.02, at, (0, -a, 0))
    else:
        _legs(p, rng, s, s, h - t, 4, rng.random() < 0.4)
    bh = rng.uniform(0.25, 0.6)
    tilt = rng.uniform(0.0, 0.25)
    p.box(0.02, bh / 2, s, (-s - 0.02 + np.sin(tilt) * bh / 2, h + bh / 2, 0), (0, 0, tilt))
    if rng.random() < 0.4:
        ah = rng.uniform(0.15, 0.25)
        for z in (-s, s):
            p.box(s * 0.9, 0.02, 0.025, (0, h + ah, z))
            p.box(0.02, ah / 2, 0.02, (s * 0.7, h + ah / 2, z))
    return p


def sofa(rng) -> Parts:
    p = Parts()
    hx, hz = rng.uniform(0.7, 1.2), rng.uniform(0.32, 0.48)
    sh = rng.uniform(0.18, 0.28)
    p.box(hx, sh / 2, hz, (0, sh / 2 + 0.05, 0))
    bh = rng.uniform(0.2, 0.45)
    p.box(hx, bh / 2 + sh / 2, rng.uniform(0.06, 0.14), (0, (sh + bh) / 2 + 0.05, -hz))
    if rng.random() < 0.85:
        ah = rng.uniform(0.08, 0.25)
        aw = rng.uniform(0.06, 0.14)
        for x in (-hx, hx):
            p.box(aw, (sh + ah) / 2, hz, (x, (sh + ah) / 2 + 0.05, 0))
    if rng.random() < 0.5:
        n = int(rng.integers(2, 4))
        for k in range(n):
            cx = -hx + (2 * k + 1) * hx / n
            p.box(hx / n * 0.95, 0.05, hz * 0.9, (cx, sh + 0.1, 0.02))
    _legs(p, rng, hx, hz, 0.05, 4, False)
    return p


def bed(rng) -> Parts:
    p = Parts()
    hx, hz = rng.uniform(0.85, 1.1), rng.uniform(0.4, 0.8)
    h = rng.uniform(0.2, 0.4)
    mt = rng.uniform(0.06, 0.14)
    p.box(hx, mt, hz, (0, h + mt, 0))
    p.box(hx, h / 2, hz, (0, h / 2, 0))
    hb = rng.uniform(0.3, 0.75)
    p.box(0.04, hb / 2, hz, (-hx - 0.04, hb / 2, 0))
    if rng.random() < 0.5:
        fb = hb * rng.uniform(0.4, 0.8)
        p.box(0.04, fb / 2, hz, (hx + 0.04, fb / 2, 0))
    for k in range(int(rng.integers(0, 3))):
        z = 0.0 if k == 0 and rng.random() < 0.5 else (-1) ** k * hz * 0.45
        p.ellipsoid(0.12, 0.05, hz * 0.35, (-hx + 0.2, h + 2 * mt + 0.04, z))
    return p


def bookshelf(rng) -> Parts:
    p = Parts()
    hx, hy, hz = rng.uniform(0.35, 0.8), rng.uniform(0.6, 1.1), rng.uniform(0.12, 0.3)
    t = rng.uniform(0.015, 0.04)
    for x in (-hx, hx):
        p.box(t, hy, hz, (x, hy, 0))
    n = int(rng.integers(2, 6))
    for k in range(n + 2):
        p.box(hx, t, hz, (0, 2 * hy * k / (n + 1) + t, 0))
    if rng.random() < 0.6:
        p.box(hx, hy, t / 2, (0, hy, -hz))
    return p


def bottle(rng) -> Parts:
    p = Parts()
    r = rng.uniform(0.12, 0.28)
    h = rng.uniform(0.45, 0.9)
    p.frustum(r, h, (0, h / 2, 0), top=rng.uniform(0.85, 1.05), caps=1)
    sh = rng.uniform(0.08, 0.25)
    nr = rng.uniform(0.2, 0.45)
    p.frustum(r, sh, (0, h + sh / 2, 0), top=nr, caps=0)
    nh = rng.uniform(0.08, 0.3)
    p.frustum(r * nr, nh, (0, h + sh + nh / 2, 0), caps=2)
    if rng.random() < 0.5:
        p.frustum(r * nr * 1.2, 0.05, (0, h + sh + nh + 0.02, 0))
    return p


def mug(rng) -> Parts:
    p = Parts()
    r = rng.uniform(0.15, 0.28)
    h = rng.uniform(0.25, 0.5)
    p.frustum(r, h, (0, h / 2, 0), top=rng.uniform(0.9, 1.2), caps=1)
    if rng.random() < 0.85:
        major = h * rng.uniform(0.22, 0.35)
        p.torus(major, 0.02, (r, h / 2, 0), frac=0.5, rot=(np.pi / 2, 0, -np.pi / 2))
    return p


def lamp(rng) -> Parts:
    p = Parts()
    br = rng.uniform(0.08, 0.2)
    if rng.random() < 0.7:
        p.frustum(br, 0.04, (0, 0.02, 0), top=rng.uniform(0.6, 1.0))
    else:
        p.box(br, 0.02, br, (0, 0.02, 0))
    ph = rng.uniform(0.4, 1.1)
    top = (0.0, ph, 0.0)
    if rng.random() < 0.35:  # desk lamp: a tilted arm
        ang = rng.uniform(0.3, 0.8)
        p.frustum(0.012, ph * 0.5, (0, ph * 0.25, 0), caps=0)
        p.frustum(0.012, ph * 0.6, (np.sin(ang) * ph * 0.3, ph * 0.5 + np.cos(ang) * ph * 0.3, 0),
                  caps=0, rot=(0, 0, -ang))  # fmt: skip
        top = (np.sin(ang) * ph * 0.6, ph * 0.5 + np.cos(ang) * ph * 0.6, 0.0)
    else:
        p.frustum(0.015, ph, (0, ph / 2, 0), caps=0)
    sr = rng.uniform(0.12, 0.3)
    u = rng.random()
    if u < 0.55:
        sh = rng.uniform(0.12, 0.3)
        p.frustum(sr, sh, (top[0], top[1] + sh * 0.3, 0), top=rng.uniform(0.35, 0.8), caps=0)
    elif u < 0.8:
        p.ellipsoid(sr * 0.8, sr * rng.uniform(0.6, 1.0), sr * 0.8, (top[0], top[1] + sr * 0.6, 0))
    else:
        p.frustum(sr, sr, (top[0], top[1], 0), top=0.0, caps=0)
    return p


def airplane(rng) -> Parts:
    p = Parts()
    length = rng.uniform(0.8, 1.2)
    fr = rng.uniform(0.06, 0.13)
    p.ellipsoid(length, fr, fr, (0, 0, 0))
    span, chord = rng.uniform(0.5, 1.1), rng.uniform(0.1, 0.25)
    sweep = rng.uniform(-0.5, 0.05)
    wx = rng.uniform(-0.15, 0.15)
    for side in (-1, 1):
        p.box(chord, 0.012, span / 2, (wx, -fr * 0.3, side * span / 2), (0, side * sweep, 0))
    p.box(chord * 0.5, 0.01, span * 0.2, (-length * 0.85, 0, 0))
    fin = rng.uniform(0.12, 0.3)
    p.box(chord * 0.5, fin / 2, 0.01, (-length * 0.85, fin / 2, 0), (0, 0, rng.uniform(0, 0.4)))
    if rng.random() < 0.6:
        for z in (-span * 0.35, span * 0.35):
            p.frustum(fr * 0.4, chord * 1.6, (wx + 0.05, -fr, z), caps=3, rot=(0, 0, np.pi / 2))
    return p


def guitar(rng) -> Parts:
    p = Parts()
    lb = rng.uniform(0.2, 0.3)
    ub = lb * rng.uniform(0.65, 0.85)
    d = rng.uniform(0.04, 0.08)
    p.ellipsoid(lb, lb * 1.05, d, (0, lb, 0))
    p.ellipsoid(ub, ub, d, (0, 2 * lb + ub * 0.5, 0))
    nl = rng.uniform(0.45, 0.65)
    top = 2 * lb + ub * 1.3
    p.box(0.028, nl / 2, 0.02, (0, top + nl / 2, 0.0))
    p.box(0.045, 0.08, 0.018, (0, top + nl + 0.08, 0), (rng.uniform(-0.2, 0.2), 0, 0))
    return p


def tent(rng) -> Parts:
    p = Parts()
    if rng.random() < 0.6:  # ridge tent: two leaning panels
        hx, w, h = rng.uniform(0.5, 1.0), rng.uniform(0.35, 0.7), rng.uniform(0.4, 0.8)
        ang = np.arctan2(w, h)
        slant = np.hypot(w, h)
        for side in (-1, 1):
            p.box(hx, 0.01, slant / 2, (0, h / 2, side * w / 2), (side * (np.pi / 2 - ang), 0, 0))
        if rng.random() < 0.5:
            p.box(hx, 0.005, w, (0, 0, 0))
    else:  # cone / dome tent
        r, h = rng.uniform(0.5, 0.9), rng.uniform(0.5, 1.0)
        if rng.random() < 0.5:
            p.frustum(r, h, (0, h / 2, 0), top=rng.uniform(0.0, 0.08), caps=0)
        else:
            p.ellipsoid(r, h, r * rng.uniform(0.8, 1.1), (0, 0, 0))
            p.box(r, 0.005, r, (0, 0, 0))
    return p


BUILDERS = {
    "airplane": airplane, "bed": bed, "bookshelf": bookshelf, "bottle": bottle, "chair": chair,
    "lamp": lamp, "mug": mug, "sofa": sofa, "stool": stool, "table": table, "guitar": guitar,
    "tent": tent,
}  # fmt: skip
