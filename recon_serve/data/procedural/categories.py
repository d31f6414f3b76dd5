"""One small builder per object category: rng -> {part name: mesh or list of meshes}.

Builders draw every size, count and style from the numpy Generator they are given, so a
(category, seed) pair fixes the shape. They work in rough metres with +y up, the front
towards +z (long objects along x), and need not be centred: `generate` rescales and places.
Every declared part is always built; optional pieces are folded into a part that exists.
"""
from __future__ import annotations

import numpy as np

from .primitives import (TAU, box, cylinder, ellipsoid, frustum, lathe, merge, prism, rod, rotate,
                         rotation, shell, torus, transform, translate)


def _u(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _corners(w, d, inset):
    """(x, z) of four legs under a w x d rectangle."""
    return [(sx * (w / 2 - inset), sz * (d / 2 - inset)) for sx in (-1, 1) for sz in (-1, 1)]


def _ring(n, radius, phase=0.0):
    """(x, z) of n points evenly on a circle."""
    a = phase + np.arange(n) * TAU / n
    return list(zip(radius * np.cos(a), radius * np.sin(a)))


def _legs(rng, xz, top, r, style=None):
    """Legs from height `top` to the floor at each (x, z): round, square, tapered or splayed."""
    style = style or _pick(rng, ["round", "square", "tapered", "splayed"])
    splay = _u(rng, 0.04, 0.12) * top
    out = []
    for x, z in xz:
        if style == "square":
            out.append(box((2 * r, top, 2 * r), (x, top / 2, z)))
        elif style == "round":
            out.append(translate(cylinder(r, 0, top, 12), (x, 0, z)))
        elif style == "tapered":
            out.append(translate(frustum(r * 0.55, r * 1.15, 0, top, 12), (x, 0, z)))
        else:
            n = np.hypot(x, z) or 1.0
            out.append(rod((x + splay * x / n, 0, z + splay * z / n), (x, top, z), r))
    return out


def _flat_top(w, d, t, y, shape):
    """A slab with its top face at y: rectangular, round or oval."""
    if shape == "rect":
        return box((w, t, d), (0, y - t / 2, 0))
    return transform(cylinder(0.5, y - t, y, 40), scale=(w, 1, d))


def _pedestal(rng, top, r_col, r_foot, feet=None):
    """A central column with a disc or a star of feet: the 'legs' of pedestal tables and office chairs."""
    parts = [cylinder(r_col, 0.02, top, 16)]
    feet = feet if feet is not None else int(rng.integers(0, 2)) * int(rng.integers(3, 6))
    if feet:
        parts += [rod((0, 0.05, 0), (x, 0.015, z), r_col * 0.7) for x, z in _ring(feet, r_foot, _u(rng, 0, 1))]
    else:
        parts.append(frustum(r_foot, r_foot * 0.8, 0, 0.04, 32))
    return parts


# ---------------------------------------------------------------- furniture

def _chair(rng, arms: bool):
    w, d, h, t = _u(rng, .4, .55), _u(rng, .4, .52), _u(rng, .40, .50), _u(rng, .03, .07)
    round_seat = rng.random() < 0.25
    seat = _flat_top(w, d, t, h, "round" if round_seat else "rect")
    r = _u(rng, .015, .03)
    if rng.random() < 0.2:
        legs = _pedestal(rng, h - t, _u(rng, .02, .04), _u(rng, .22, .3), feet=int(rng.integers(4, 6)))
    else:
        xz = _ring(4, 0.35 * min(w, d) * 1.2, np.pi / 4) if round_seat else _corners(w, d, r + .01)
        legs = _legs(rng, xz, h - t, r)
        if rng.random() < 0.4:  # stretchers between the legs
            y = _u(rng, .08, .2)
            legs += [rod((x0, y, z0), (x1, y, z1), r * 0.5) for (x0, z0), (x1, z1) in zip(xz, xz[1:] + xz[:1])]
    bh, bt = _u(rng, .3, .55), _u(rng, .02, .05)
    z0 = -d / 2 + bt / 2 + .01
    style = _pick(rng, ["panel", "panel", "slats", "rails"])
    if style == "panel":
        back = [box((w * _u(rng, .8, 1), bh, bt), (0, h + bh / 2, z0))]
    else:
        pw = _u(rng, .025, .045)
        back = [box((pw, bh, bt), (sx * (w / 2 - pw / 2), h + bh / 2, z0)) for sx in (-1, 1)]
        back.append(box((w, _u(rng, .04, .1), bt), (0, h + bh - .03, z0)))
        n = int(rng.integers(2, 6))
        if style == "slats":
            xs = np.linspace(-w / 2 + pw, w / 2 - pw, n + 2)[1:-1]
            back += [box((_u(rng, .02, .05), bh, bt * 0.7), (x, h + bh / 2, z0)) for x in xs]
        else:
            back += [box((w, .03, bt * 0.7), (0, y, z0)) for y in np.linspace(h + .08, h + bh - .1, n)]
    back = rotate(merge(back), "x", -_u(rng, 0, .25), (0, h, z0))  # lean back
    parts = {"seat": seat, "back": back, "legs": legs}
    if arms:
        ah, aw = _u(rng, .16, .26), _u(rng, .04, .09)
        if rng.random() < 0.3:  # solid side panels
            parts["arms"] = [box((aw, ah + t + .1, d), (sx * (w / 2 + aw / 2), h + ah / 2 - t / 2 - .05, 0)) for sx in (-1, 1)]
        else:
            al = d * _u(rng, .8, 1)
            parts["arms"] = [m for sx in (-1, 1) for m in (
                box((aw, .03, al), (sx * (w / 2 - aw / 2), h + ah, 0)),
                rod((sx * (w / 2 - aw / 2), h, d / 2 - .05), (sx * (w / 2 - aw / 2), h + ah, d / 2 - .05), .015))]
    return parts


def chair(rng):
    return _chair(rng, arms=False)


def armchair(rng):
    return _chair(rng, arms=True)


def table(rng):
    shape = _pick(rng, ["rect", "rect", "round", "oval"])
    w = _u(rng, .8, 1.8) if shape != "round" else _u(rng, .7, 1.2)
    d = w if shape == "round" else _u(rng, .5, .95) * min(w, 1.1)
    h, t = (_u(rng, .68, .78) if rng.random() < .7 else _u(rng, .35, .5)), _u(rng, .025, .06)
    top = [_flat_top(w, d, t, h, shape)]
    r = _u(rng, .02, .04)
    style = _pick(rng, ["legs", "legs", "pedestal", "trestle" if shape == "rect" else "legs"])
    if style == "pedestal":
        legs = _pedestal(rng, h - t, _u(rng, .04, .08), _u(rng, .22, .3) * min(w, d) * 1.5)
    elif style == "trestle":
        legs = [box((.05, h - t, d * .7), (sx * (w / 2 - .12), (h - t) / 2, 0)) for sx in (-1, 1)]
        legs += [box((.08, .05, d * .85), (sx * (w / 2 - .12), .025, 0)) for sx in (-1, 1)]
        legs.append(box((w - .24, .05, .04), (0, .25, 0)))
    else:
        n = 4 if shape == "rect" else int(rng.integers(3, 5))
        xz = _corners(w, d, r + _u(rng, .02, .08)) if shape == "rect" else \
            [(x * w / 2 * .75, z * d / 2 * .75) for x, z in _ring(n, 1.0, np.pi / 4)]
        legs = _legs(rng, xz, h - t, r)
        if shape == "rect" and rng.random() < .5:  # apron under the top
            a = _u(rng, .05, .1)
            top.append(box((w - 2 * r - .08, a, d - 2 * r - .08), (0, h - t - a / 2, 0)))
    return {"top": top, "legs": legs}


def stool(rng):
    h, rs, t = _u(rng, .45, .8), _u(rng, .14, .22), _u(rng, .03, .06)
    square = rng.random() < .3
    seat = _flat_top(2 * rs, 2 * rs, t, h, "rect" if square else "round")
    if rng.random() < .25:
        legs = _pedestal(rng, h - t, _u(rng, .02, .035), rs * _u(rng, .9, 1.3), feet=0)
    else:
        n, r, foot = int(rng.integers(3, 5)), _u(rng, .012, .025), _u(rng, 1.0, 1.5)
        ring = _ring(n, rs * .75, np.pi / 4 if square else 0)
        legs = [rod((x * foot / .75 * .9, 0, z * foot / .75 * .9), (x, h - t, z), r) for x, z in ring]
        if rng.random() < .6:  # foot ring
            y = _u(rng, .2, .4) * h
            rr = rs * .75 * (1 + (foot / .75 * .9 - 1) * (1 - y / (h - t)))
            legs.append(transform(torus(rr, r * .8, segments=32, tube_segments=6), rotation("x", np.pi / 2), (0, y, 0)))
    return {"seat": seat, "legs": legs}


def bench(rng):
    L, d, h, t = _u(rng, 1.0, 1.8), _u(rng, .3, .45), _u(rng, .4, .48), _u(rng, .03, .06)
    n = _pick(rng, [1, 1, 3, 4, 5])
    gap = .015
    sd = (d - gap * (n - 1)) / n
    seat = [box((L, t, sd), (0, h - t / 2, -d / 2 + sd / 2 + i * (sd + gap))) for i in range(n)]
    if rng.random() < .4:
        legs = [box((_u(rng, .04, .08), h - t, d * .9), (sx * (L / 2 - .1), (h - t) / 2, 0)) for sx in (-1, 1)]
    else:
        xs = [-L / 2 + .08, L / 2 - .08] + ([0.0] if L > 1.4 else [])
        legs = _legs(rng, [(x, sz * (d / 2 - .05)) for x in xs for sz in (-1, 1)], h - t, _u(rng, .02, .035))
    return {"seat": seat, "legs": legs}


def sofa(rng):
    W, D, fh, bh = _u(rng, 1.4, 2.4), _u(rng, .75, 1.0), _u(rng, .03, .12), _u(rng, .18, .3)
    y0 = fh + bh
    base = [box((W, bh, D), (0, fh + bh / 2, 0))]
    base += [box((.06, fh, .06), (x, fh / 2, z)) for x, z in _corners(W, D, .08)]
    aw, ah = _u(rng, .1, .25), _u(rng, .15, .3)
    arms = [box((aw, ah + bh, D), (sx * (W / 2 - aw / 2), fh + (ah + bh) / 2, 0)) for sx in (-1, 1)]
    if rng.random() < .4:  # rolled arms
        arms += [transform(cylinder(aw * .6, -D / 2, D / 2, 20), rotation("x", np.pi / 2), (sx * (W / 2 - aw / 2), y0 + ah, 0))
                 for sx in (-1, 1)]
    bd, bk = _u(rng, .15, .25), _u(rng, .35, .55)
    back = [rotate(box((W - 2 * aw, bk + bh, bd), (0, fh + (bk + bh) / 2, -D / 2 + bd / 2)), "x", -_u(rng, 0, .12), (0, y0, -D / 2))]
    n, ct = int(rng.integers(1, 5)), _u(rng, .08, .15)
    cw = (W - 2 * aw) / n
    cushions = [box((cw - .02, ct, D - bd - .02), (-W / 2 + aw + cw * (i + .5), y0 + ct / 2, bd / 2)) for i in range(n)]
    return {"base": base, "back": back, "arms": arms, "cushions": cushions}


def bed(rng):
    W, L, lh, fh, mt = _u(rng, .9, 1.9), _u(rng, 1.9, 2.2), _u(rng, .05, .2), _u(rng, .12, .3), _u(rng, .15, .3)
    frame = [box((W, fh, L), (0, lh + fh / 2, 0))] + _legs(rng, _corners(W, L, .05), lh, .03, "square")
    top = lh + fh
    if rng.random() < .4:  # footboard
        fb = _u(rng, .1, .35)
        frame.append(box((W, top + fb, .05), (0, (top + fb) / 2, L / 2 + .025)))
    mattress = box((W - .04, mt, L - .06), (0, top + mt / 2, .01))
    hh, ht = top + mt + _u(rng, .25, .7), _u(rng, .04, .1)
    head = [box((W + .04, hh, ht), (0, hh / 2, -L / 2 - ht / 2))]
    if rng.random() < .4:
        head += [translate(cylinder(.04, 0, hh + .08, 12), (sx * (W / 2 + .04), 0, -L / 2 - ht / 2)) for sx in (-1, 1)]
    elif rng.random() < .5:
        head.append(transform(cylinder(ht * .8, -W / 2, W / 2, 16), rotation("z", np.pi / 2), (0, hh, -L / 2 - ht / 2)))
    n = 1 if W < 1.2 else int(rng.integers(1, 3))
    pw = (W - .1) / n
    pillows = [ellipsoid((pw * .45, .06, .17), (-W / 2 + .05 + pw * (i + .5), top + mt + .05, -L / 2 + .25)) for i in range(n)]
    return {"frame": frame, "mattress": mattress, "headboard": head, "pillows": pillows}


def _drawer_fronts(rng, x, y0, y1, w, z, rows):
    """Drawer fronts (with a knob or bar each) stacked in a column centred at x."""
    hh = (y1 - y0) / rows
    fronts, knobs = [], []
    bar = rng.random() < .5
    for i in range(rows):
        yc = y0 + hh * (i + .5)
        fronts.append(box((w - .02, hh - .02, .02), (x, yc, z + .01)))
        knobs.append(box((w * .3, .015, .02), (x, yc, z + .03)) if bar else ellipsoid((.015,) * 3, (x, yc, z + .03), 8, 6))
    return fronts, knobs


def desk(rng):
    W, D, H, t = _u(rng, 1.0, 1.7), _u(rng, .5, .8), _u(rng, .7, .78), _u(rng, .025, .05)
    top = box((W, t, D), (0, H - t / 2, 0))
    r = _u(rng, .02, .035)
    if rng.random() < .65:
        side = _pick(rng, [-1, 1])
        pw = _u(rng, .35, .5)
        x = side * (W / 2 - pw / 2)
        fronts, knobs = _drawer_fronts(rng, x, .03, H - t, pw, D / 2 - .03, int(rng.integers(1, 5)))
        drawers = [box((pw, H - t - .03, D - .06), (x, (H - t + .03) / 2, 0))] + fronts + knobs
        legs = _legs(rng, [(-side * (W / 2 - r - .03), sz * (D / 2 - r - .03)) for sz in (-1, 1)], H - t, r)
    else:
        legs = _legs(rng, _corners(W, D, r + .03), H - t, r)
        n = int(rng.integers(1, 3))
        dw = (W - .2) / n
        drawers = []
        for i in range(n):
            xc = -W / 2 + .1 + dw * (i + .5)
            fronts, knobs = _drawer_fronts(rng, xc, H - t - .12, H - t, dw, D / 2 - .04, 1)
            drawers += [box((dw - .02, .12, D - .1), (xc, H - t - .06, 0))] + fronts + knobs
    return {"top": top, "legs": legs, "drawers": drawers}


def bookshelf(rng):
    W, H, D, st = _u(rng, .5, 1.2), _u(rng, .8, 2.0), _u(rng, .25, .4), _u(rng, .02, .04)
    sides = [box((st, H, D), (sx * (W / 2 - st / 2), H / 2, 0)) for sx in (-1, 1)]
    n = max(2, int(round(H / _u(rng, .28, .4)))) + 1
    ys = np.linspace(_u(rng, 0, .1) + st / 2, H - st / 2, n)
    shelves = [box((W - 2 * st, st, D - .01), (0, y, .005)) for y in ys]
    back = box((W, H, .01), (0, H / 2, -D / 2 + .005))
    return {"sides": sides, "shelves": shelves, "back": back}


def dresser(rng):
    W, H, D, fh = _u(rng, .6, 1.6), _u(rng, .6, 1.3), _u(rng, .4, .55), _u(rng, 0, .12)
    body = [box((W, H - fh, D), (0, fh + (H - fh) / 2, 0)), box((W + .03, .025, D + .02), (0, H + .0125, 0))]
    if fh > .01:
        body += _legs(rng, _corners(W, D, .04), fh, .025, _pick(rng, ["round", "square", "tapered"]))
    rows, cols = int(rng.integers(2, 6)), int(rng.integers(1, 4)) if W > .9 else 1
    drawers, handles = [], []
    cw = (W - .04) / cols
    for c in range(cols):
        f, k = _drawer_fronts(rng, -W / 2 + .02 + cw * (c + .5), fh + .03, H - .02, cw, D / 2, rows)
        drawers += f
        handles += k
    return {"body": body, "drawers": drawers, "handles": handles}


# ---------------------------------------------------------------- lamps

def floor_lamp(rng):
    H = _u(rng, 1.3, 1.8)
    style = _pick(rng, ["disc", "disc", "tripod", "square"])
    if style == "tripod":
        base = [rod((x, 0, z), (0, H * .3, 0), .012) for x, z in _ring(3, _u(rng, .2, .3))]
    elif style == "square":
        s = _u(rng, .2, .3)
        base = [box((s, .03, s), (0, .015, 0))]
    else:
        base = [frustum(_u(rng, .12, .2), .06, 0, _u(rng, .02, .05), 32)]
    r = _u(rng, .01, .02)
    if rng.random() < .3:  # arc lamp: the pole bends over and the shade hangs down
        R = _u(rng, .3, .5)
        ext, sr = _u(rng, .1, .3), _u(rng, .12, .2)
        pole = [cylinder(r, 0, H - R, 12), translate(torus(R, r, np.pi / 2, np.pi / 2, 24, 8), (R, H - R, 0)),
                rod((R, H, 0), (R + ext, H, 0), r)]
        shade = translate(lathe([(sr, 0), (sr * .6, sr * .5), (r * 2, sr * .75)], 32, caps=False),
                          (R + ext, H - sr * .75 - .01, 0))
    else:
        pole = [cylinder(r, 0, H, 12)]
        rb, rt, sh = _u(rng, .15, .25), _u(rng, .08, .2), _u(rng, .15, .3)
        shade = lathe([(rb, H - sh * .6), (rt, H + sh * .4)], 40, caps=False)
    return {"base": base, "pole": pole, "shade": shade}


def desk_lamp(rng):
    br, bh = _u(rng, .07, .12), _u(rng, .015, .04)
    base = [cylinder(br, 0, bh, 32)] if rng.random() < .6 else [box((br * 2, bh, br * 1.6), (0, bh / 2, 0))]
    a1, l1, a2, l2 = _u(rng, -.5, .3), _u(rng, .25, .4), _u(rng, -.3, .5), _u(rng, .2, .35)
    e = np.array([0, bh + l1 * np.cos(a1), -l1 * np.sin(a1)])
    hpos = e + [0, l2 * np.sin(a2), l2 * np.cos(a2)]
    r = _u(rng, .008, .015)
    arm = [rod((0, bh, 0), e, r), rod(e, hpos, r), ellipsoid((r * 2,) * 3, e, 10, 6)]
    b, hl, hr = _u(rng, .3, 1.0), _u(rng, .08, .15), _u(rng, .05, .1)
    mouth = hpos + np.array([0, -np.cos(b), np.sin(b)]) * hl
    head = [rod(mouth, hpos, hr, hr * _u(rng, .2, .5), 32)]
    return {"base": base, "arm": arm, "head": head}


# ---------------------------------------------------------------- tableware

def mug(rng):
    r, h, taper, wall = _u(rng, .035, .06), _u(rng, .07, .12), _u(rng, .85, 1.15), _u(rng, .003, .006)
    body = shell([(0, 0), (r * .92, 0), (r, h * .06), (r * taper, h)], wall, 40)
    R, m, squash = _u(rng, .28, .42) * h, _u(rng, .006, .01), _u(rng, .5, 1.0)
    x = r * (1 + taper) / 2 - m
    handle = transform(torus(R, m, np.pi, -np.pi / 2, 24, 8), scale=(squash, 1, 1), offset=(x, h * _u(rng, .45, .55), 0))
    return {"body": body, "handle": handle}


def wineglass(rng):
    fr, fh = _u(rng, .025, .04), _u(rng, .002, .006)
    sh, sr = _u(rng, .04, .1), _u(rng, .003, .006)
    br, bh = _u(rng, .03, .05), _u(rng, .05, .1)
    y = fh + sh
    lip = _u(rng, .6, 1.1)
    bowl = shell([(0, y), (br * .5, y + bh * .08), (br, y + bh * .5), (br * (lip + 1) / 2, y + bh * .8), (br * lip, y + bh)], .0015, 40)
    stem = [cylinder(sr, fh * .5, y + .002, 12)]
    if rng.random() < .3:
        stem.append(ellipsoid((sr * 2.5, sr * 2, sr * 2.5), (0, fh + sh * _u(rng, .3, .7), 0), 12, 8))
    foot = frustum(fr, sr * 1.5, 0, fh + .002, 40)
    return {"bowl": bowl, "stem": stem, "foot": foot}


def bottle(rng):
    hb, r = _u(rng, .45, .7), _u(rng, .1, .22)
    seg = _pick(rng, [40, 40, 40, 4, 6])
    spin = np.pi / seg if seg < 10 else 0.0
    body = rotate(lathe([(0, 0), (r * .95, 0), (r, .02), (r, hb)], seg), "y", spin)
    rn, sh, nl = r * _u(rng, .2, .45), _u(rng, .05, .2), _u(rng, .05, .3)
    neck = [rotate(lathe([(r, hb), (r * .8, hb + sh * .4), (rn * 1.1, hb + sh)], seg, caps=False), "y", spin),
            lathe([(rn * 1.1, hb + sh), (rn, hb + sh + .01), (rn, hb + sh + nl), (rn * 1.15, hb + sh + nl + .01)], 24, caps=False)]
    ch = _u(rng, .03, .08)
    top = hb + sh + nl
    cap = cylinder(rn * _u(rng, 1.15, 1.35), top - ch * .3, top + ch * .7, 24)
    return {"body": body, "neck": neck, "cap": cap}


def _smooth_profile(ctrl, n=24):
    """A smooth (radius, y) curve through control points (monotone in y), by cosine easing."""
    ctrl = np.asarray(ctrl, dtype=np.float64)
    out = []
    for (r0, y0), (r1, y1) in zip(ctrl[:-1], ctrl[1:]):
        t = np.linspace(0, 1, n, endpoint=False)
        e = (1 - np.cos(np.pi * t)) / 2
        out.append(np.stack([r0 + (r1 - r0) * e, y0 + (y1 - y0) * t], 1))
    return np.concatenate(out + [ctrl[-1:]])


def vase(rng):
    r0, r1, y1 = _u(rng, .12, .3), _u(rng, .2, .45), _u(rng, .25, .55)
    r2, y2 = _u(rng, .06, .2), _u(rng, .65, .85)
    r3 = r2 * _u(rng, 1.0, 1.8)
    prof = _smooth_profile([(r0, 0), (r1, y1), (r2, y2), (r3, 1.0)])
    seg = _pick(rng, [48, 48, 6, 8])
    k = int(np.searchsorted(prof[:, 1], y1 + (y2 - y1) * .7))
    body = lathe(np.concatenate([[(0, 0)], prof[:k + 1]]), seg, caps=False)
    neck = shell(prof[k:], .012, seg)
    return {"body": body, "neck": neck}


def bowl(rng):
    R, H, fh = _u(rng, .12, .2), _u(rng, .04, .12), _u(rng, .005, .02)
    rb = R * _u(rng, .3, .6)
    t = np.linspace(0, np.pi / 2, 12)
    prof = np.concatenate([[(0, fh)], np.stack([rb + (R - rb) * np.sin(t), fh + (H - fh) * (1 - np.cos(t))], 1)])
    body = shell(prof, R * _u(rng, .02, .05), 48)
    foot = frustum(rb * _u(rng, .8, 1.0), rb * .85, 0, fh + .002, 40)
    return {"body": body, "foot": foot}


def saucepan(rng):
    R, h = _u(rng, .08, .14), _u(rng, .05, .12)
    body = shell([(0, 0), (R * .95, 0), (R, .01), (R, h)], .004, 40)
    if rng.random() < .65:  # one long handle
        L, a = R * _u(rng, 1.1, 1.8), _u(rng, 0, .35)
        p0 = np.array([R * .9, h * .8, 0])
        handle = [rod(p0, p0 + [L * np.cos(a), L * np.sin(a), 0], _u(rng, .007, .012), None, 10)]
    else:  # two loop handles
        handle = [transform(torus(R * _u(rng, .2, .3), .007, np.pi, -np.pi / 2, 16, 6), rotation("x", np.pi / 2), (sx * R, h * .8, 0), scale=(sx, 1, 1))
                  for sx in (-1, 1)]
    return {"body": body, "handle": handle}


def spoon(rng):
    a, b, dep = _u(rng, .025, .04), _u(rng, .015, .025), _u(rng, .006, .012)
    bowl_ = transform(shell([(0, 0), (.6, 0), (1, dep / a)], .06, 32), scale=(a, a, b))
    L, ang = _u(rng, .1, .16), _u(rng, .05, .3)
    p0 = np.array([a * .9, dep, 0])
    handle = rod(p0, p0 + [L * np.cos(ang), L * np.sin(ang), 0], _u(rng, .003, .005), _u(rng, .004, .008), 10)
    return {"bowl": bowl_, "handle": handle}


# ---------------------------------------------------------------- vehicles

def airplane(rng):
    rf = _u(rng, .035, .07)
    prof = [(0, 0), (rf * .5, .02), (rf * .9, .07), (rf, .13), (rf, .68), (rf * .55, .9), (rf * .2, 1.0)]
    fus = transform(lathe(prof, 24), rotation("z", np.pi / 2), (.5, 0, 0))  # nose at +x
    span, c, ct, sw = _u(rng, .4, .65), _u(rng, .12, .24), _u(rng, .3, .7), _u(rng, 0, .25)
    xw, yw = _u(rng, .05, .25), _pick(rng, [-.6, 0, .6]) * rf
    half = prism([(xw - c, 0), (xw, 0), (xw - sw, span), (xw - sw - c * ct, span)], .012)
    dih = _u(rng, 0, .12)
    wings = [transform(rotate(transform(half, rotation("x", np.pi / 2)), "x", -dih), offset=(0, yw, 0), scale=(1, 1, s))
             for s in (1, -1)]
    xt, ts, tc = -.42, _u(rng, .1, .2), _u(rng, .06, .12)
    stab = prism([(xt - tc, 0), (xt, 0), (xt - tc * .6, ts), (xt - tc, ts)], .008)
    fin_h = _u(rng, .08, .16)
    fin = prism([(xt - .05 - tc, 0), (xt + .02, 0), (xt - .06 - tc * .3, fin_h), (xt - .06 - tc * .9, fin_h)], .01)
    ty = fin_h + rf * .5 if rng.random() < .25 else rf * .3  # T-tail or conventional
    tail = [translate(fin, (0, rf * .2, 0))] + [transform(transform(stab, rotation("x", np.pi / 2)), offset=(-.03, ty, 0), scale=(1, 1, s))
                                             for s in (1, -1)]
    re, le = _u(rng, .02, .04), _u(rng, .08, .15)
    style = _pick(rng, ["wing", "wing", "wing4", "rear"])
    if style == "rear":
        spots = [(-.32, rf * .4, s * (rf + re * 1.3)) for s in (1, -1)]
    else:
        zs = [.3] if style == "wing" else [.25, .5]
        spots = [(xw - sw * z - c * .1, yw - re * 1.4 + span * z * np.sin(dih), s * span * z) for z in zs for s in (1, -1)]
    engines = [rod((x + le * .5, y, z), (x - le * .5, y, z), re, re * .8, 16) for x, y, z in spots]
    engines += [box((le * .4, re * 1.2, .006), (x, y + re, z)) for x, y, z in spots if style != "rear"]
    return {"fuselage": fus, "wings": wings, "tail": tail, "engines": engines}


def car(rng):
    L, W, r = 1.0, _u(rng, .38, .48), _u(rng, .07, .1)
    yb, hb = r * _u(rng, .7, 1.0), _u(rng, .12, .2)
    h1, h2 = hb * _u(rng, .5, .85), hb * _u(rng, .6, 1.0)
    hood, rear = _u(rng, .05, .15), _u(rng, .02, .1)
    body = [prism([(-L / 2, yb), (L / 2, yb), (L / 2, yb + h1), (L / 2 - hood, yb + hb), (-L / 2 + rear, yb + hb), (-L / 2, yb + h2)], W)]
    style = _pick(rng, ["sedan", "hatch", "van", "pickup"])
    x0, x1 = {"sedan": (-.3, .2), "hatch": (-.47, .2), "van": (-.48, .35), "pickup": (-.1, .22)}[style]
    x0, x1 = x0 + _u(rng, -.04, .04), x1 + _u(rng, -.04, .04)
    hc = _u(rng, .12, .2) * (1.4 if style == "van" else 1)
    ws, rw = _u(rng, .05, .15), (.02 if style in ("hatch", "van") else _u(rng, .06, .15))
    y = yb + hb
    cabin = prism([(x0, y - .01), (x1, y - .01), (x1 - ws, y + hc), (x0 + rw, y + hc)], W * _u(rng, .8, .92))
    if style == "pickup":  # the load bed's side walls
        body += [box((.45, .06, .02), (-.27, y + .03, s * (W / 2 - .01))) for s in (1, -1)]
    tw, wx = _u(rng, .05, .08), _u(rng, .3, .36)
    wheels = [transform(cylinder(r, -tw / 2, tw / 2, 24), rotation("x", np.pi / 2), (x, r, s * (W / 2 + tw * .1)))
              for x in (-wx, wx) for s in (1, -1)]
    return {"body": body, "cabin": cabin, "wheels": wheels}


def bicycle(rng):
    r, wb, fs = _u(rng, .3, .36), _u(rng, .95, 1.1), _u(rng, .45, .6)
    rear, front = np.array([-wb / 2, r, 0]), np.array([wb / 2, r, 0])
    wheels = []
    for c in (rear, front):
        wheels.append(translate(torus(r, r * .05, segments=40, tube_segments=8), c))
        wheels.append(transform(cylinder(.03, -.04, .04, 12), rotation("x", np.pi / 2), c))
        n = int(rng.integers(8, 17))
        wheels += [rod(c, c + [r * np.cos(a), r * np.sin(a), 0], .003, None, 4) for a in np.arange(n) * TAU / n]
    bb = np.array([-wb / 2 + _u(rng, .38, .45), r * .85, 0])
    seat = bb + [-fs * .3, fs, 0]
    hb, ht = front + [-.1, .33, 0], front + [-.14, .5, 0]
    low = rng.random() < .3  # step-through frame
    tt = bb + (seat - bb) * (.45 if low else .9)
    tr = _u(rng, .012, .02)
    frame = [rod(a, b, tr) for a, b in ((bb, seat), (tt, ht if not low else hb), (bb, hb), (rear, bb), (rear, tt), (front, hb), (hb, ht))]
    bar_w, rise = _u(rng, .2, .3), _u(rng, .04, .12)
    stem = ht + [-.03, rise, 0]
    handlebar = [rod(ht, stem, .012), rod(stem + [0, 0, -bar_w], stem + [0, 0, bar_w], .012)]
    handlebar += [rod(stem + [0, 0, s * bar_w], stem + [0, 0, s * (bar_w - .1)], .018) for s in (1, -1)]
    top = seat + [-.02, _u(rng, .05, .15), 0]
    saddle = [rod(seat, top, .011), ellipsoid((.13, .03, .06), top + [0, .03, 0], 16, 8)]
    return {"wheels": wheels, "frame": frame, "handlebar": handlebar, "saddle": saddle}


def rocket(rng):
    r, h = _u(rng, .06, .12), _u(rng, .5, .8)
    nz = _u(rng, .03, .08)
    body = [cylinder(r, nz, nz + h, 32), frustum(r * .7, r * .5, 0, nz + .01, 24)]
    nh = _u(rng, .12, .3)
    t = np.linspace(0, 1, 10)
    shape = _u(rng, .5, 1.5)  # ogive bulge: 1 is a straight cone
    nose = lathe(np.stack([r * (1 - t) ** shape, nz + h + nh * t], 1), 32)
    n, cr, s, drop = int(rng.integers(3, 5)), _u(rng, .15, .3), r * _u(rng, 1.0, 2.0), _u(rng, 0, .08)
    ct = cr * _u(rng, .2, .7)
    fin = prism([(r * .95, nz), (r + s, nz - drop), (r + s, nz - drop + ct), (r * .95, nz + cr)], .01)
    fins = [rotate(fin, "y", k * TAU / n + np.pi / 4) for k in range(n)]
    return {"body": body, "nose": nose, "fins": fins}


# ---------------------------------------------------------------- objects

def guitar(rng):
    depth = _u(rng, .07, .11) if rng.random() < .65 else _u(rng, .035, .05)
    r1 = _u(rng, .17, .22)
    r2 = r1 * _u(rng, .7, .85)
    y2 = r1 + (r1 + r2) * _u(rng, .55, .7)
    disc = lambda rad, y, sx=1.0: transform(cylinder(rad, -depth / 2, depth / 2, 40), rotation("x", np.pi / 2), (0, y, 0), (sx, 1, 1))
    body = [disc(r1, r1), disc(r2, y2), disc(r2 * .75, (r1 + y2) / 2 - .01, 1.0)]
    wn, ln = _u(rng, .045, .06), _u(rng, .38, .5)
    y0 = y2 + r2 * .8
    neck = box((wn, ln, .03), (0, y0 + ln / 2, depth / 2 - .015))
    hl = _u(rng, .12, .18)
    head = [box((wn * 1.4, hl, .02), (0, y0 + ln + hl / 2, depth / 2 - .02))]
    head += [transform(cylinder(.008, 0, .03, 8), rotation("z", s * np.pi / 2), (s * wn * .7, y0 + ln + hl * (k + 1) / 4, depth / 2 - .02))
             for s in (1, -1) for k in range(3)]
    head = [rotate(merge(head), "x", -_u(rng, .05, .25), (0, y0 + ln, depth / 2 - .02))]
    return {"body": body, "neck": neck, "head": head}


def knife(rng):
    L, w = _u(rng, .15, .3), _u(rng, .02, .05)
    style = _pick(rng, ["chef", "chef", "dagger", "cleaver"])
    if style == "dagger":
        poly = [(0, 0), (L * .8, 0), (L, w / 2), (L * .8, w), (0, w)]
    elif style == "cleaver":
        w *= 2.2
        poly = [(0, 0), (L * .7, 0), (L * .7, w * 1.05), (0, w)]
    else:
        a, b = _u(rng, .5, .7), _u(rng, .8, .9)
        poly = [(0, 0), (L * a, 0), (L * b, w * .3), (L, w * .95), (0, w)]
    blade = prism(poly, _u(rng, .002, .004))
    hl, hw = _u(rng, .09, .14), _u(rng, .018, .03)
    yc = w - hw / 2 if style == "chef" else w / 2
    handle = [transform(ellipsoid((.5, .5, .5), (0, 0, 0), 16, 8), offset=(-hl / 2, yc, 0), scale=(hl, hw, hw * .7))
              if rng.random() < .5 else box((hl, hw, hw * .7), (-hl / 2, yc, 0)), box((.01, hw * 1.4, hw * .8), (-.005, yc, 0))]
    return {"blade": blade, "handle": handle}


def hammer(rng):
    L, r = _u(rng, .28, .4), _u(rng, .012, .02)
    handle = rod((0, 0, 0), (0, L, 0), r * _u(rng, 1.0, 1.4), r, 12)
    hl, hs = _u(rng, .09, .16), _u(rng, .02, .035)
    style = _pick(rng, ["claw", "claw", "sledge", "mallet"])
    y = L - hs * .6
    if style == "mallet":
        head = [transform(cylinder(hs * 1.3, -hl / 2, hl / 2, 24), rotation("z", np.pi / 2), (0, y, 0))]
    elif style == "sledge":
        head = [box((hl * 1.2, hs * 2, hs * 2), (0, y, 0))]
    else:
        head = [box((hl * .4, hs * 1.5, hs * 1.5), (-hl * .05, y, 0)),
                transform(cylinder(hs * .75, 0, hl * .3, 16), rotation("z", -np.pi / 2), (hl * .15, y, 0)),
                translate(prism([(-hl * .25, -hs * .5), (-hl * .25, hs * .7), (-hl * .75, -hs * .2), (-hl * .75, -hs * .6)], hs), (0, y, 0))]
    return {"handle": handle, "head": head}


def umbrella(rng):
    R, dome, ribs = _u(rng, .4, .6), _u(rng, .2, .45), int(rng.integers(6, 11))
    H = _u(rng, .8, 1.0)
    t = np.linspace(0, 1, 10)
    canopy = lathe(np.stack([R * np.cos(t * np.pi / 2), H - R * dome + R * dome * np.sin(t * np.pi / 2)], 1), ribs, caps=False)
    r = _u(rng, .008, .014)
    hy = _u(rng, .1, .2)
    pole = rod((0, hy, 0), (0, H + .06, 0), r)
    if rng.random() < .6:  # J hook
        hr = _u(rng, .04, .07)
        handle = translate(torus(hr, r * 1.6, np.pi, np.pi, 20, 8), (hr, hy, 0))
    else:
        handle = cylinder(r * 2.5, hy - _u(rng, .08, .14), hy + .01, 12)
    return {"canopy": canopy, "pole": pole, "handle": handle}


def monitor(rng):
    w = _u(rng, .5, .7)
    h, d = w * _u(rng, .45, .75), _u(rng, .015, .04)
    sy = _u(rng, .08, .2) + h / 2
    screen = [box((w, h, d), (0, sy, 0))]
    if rng.random() < .3:
        screen.append(box((w * .6, h * .6, d * 2), (0, sy, -d * 1.2)))
    bw, bd = _u(rng, .15, .3), _u(rng, .12, .2)
    base = [box((bw, .015, bd), (0, .0075, -d * .5))] if rng.random() < .5 else \
        [transform(cylinder(.5, 0, .015, 32), scale=(bw, 1, bd), offset=(0, 0, -d * .5))]
    zb = -d * 1.5 - .02
    stand = [box((.04, sy - .015, .02), (0, (sy + .015) / 2, zb))] if rng.random() < .5 else \
        [rod((0, .015, -d * .5), (0, sy, zb), .015)]
    return {"screen": screen, "stand": stand, "base": base}


def laptop(rng):
    W, t = _u(rng, .3, .4), _u(rng, .012, .025)
    D = W * _u(rng, .62, .75)
    base = [box((W, t, D), (0, t / 2, 0)), box((W * .85, .002, D * .45), (0, t + .001, -D * .12)),
            box((W * .3, .002, D * .25), (0, t + .001, D * .3))]
    ts = t * _u(rng, .35, .6)
    ds = D * _u(rng, .9, 1.0)
    screen = box((W, ds, ts), (0, ds / 2, 0))
    screen = translate(rotate(screen, "x", -_u(rng, .05, .7)), (0, t, -D / 2 + ts / 2))
    return {"base": base, "screen": screen}


def bathtub(rng):
    W, D, H, wall = _u(rng, 1.4, 1.8), _u(rng, .7, .85), _u(rng, .45, .6), _u(rng, .04, .08)
    fh = _u(rng, .05, .15)
    if rng.random() < .5:  # freestanding oval tub on claw feet
        t = np.linspace(0, np.pi / 2, 10)
        prof = np.concatenate([[(0, fh)], np.stack([.55 + .45 * np.sin(t), fh + (H - fh) * (1 - np.cos(t))], 1)])
        tub = transform(shell(prof, wall * 2, 40), scale=(W / 2, 1, D / 2))
        feet = [ellipsoid((.05, fh * .6, .05), (x * .6, fh * .5, z * .6), 10, 6) for x, z in _corners(W, D, .1)]
    else:
        tub = [box((W, wall, D), (0, fh + wall / 2, 0))]
        tub += [box((wall, H - fh, D), (s * (W / 2 - wall / 2), (H + fh) / 2, 0)) for s in (1, -1)]
        tub += [box((W, H - fh, wall), (0, (H + fh) / 2, s * (D / 2 - wall / 2))) for s in (1, -1)]
        feet = _legs(rng, _corners(W, D, .1), fh, .04, _pick(rng, ["round", "square", "tapered"]))
    return {"tub": tub, "feet": feet}


def toilet(rng):
    R, bh, el = _u(rng, .17, .22), _u(rng, .36, .44), _u(rng, 1.2, 1.5)
    t = np.linspace(0, np.pi / 2, 10)
    rb = R * .45
    prof = np.concatenate([[(0, bh * .45)], np.stack([rb + (R - rb) * np.sin(t), bh * .45 + bh * .55 * (1 - np.cos(t))], 1)])
    bowl = [transform(shell(prof, .025, 40), scale=(1, 1, el), offset=(0, 0, .05)),
            transform(frustum(rb * 1.1, rb * .9, 0, bh * .5, 32), scale=(1, 1, el * .9), offset=(0, 0, .0))]
    tw, th, td = _u(rng, .34, .46), _u(rng, .28, .4), _u(rng, .14, .2)
    zt = .05 - R * el * .8 - td / 2
    ty = bh * _u(rng, .85, 1.05)
    tank = [box((tw, th, td), (0, ty + th / 2, zt)), box((tw + .02, .02, td + .02), (0, ty + th + .01, zt))]
    ring = transform(transform(torus(R * .8, .02, segments=40, tube_segments=8), rotation("x", np.pi / 2)),
                     offset=(0, bh + .02, .05), scale=(1, .6, el))
    lid_closed = rng.random() < .5
    lid = transform(cylinder(R * .95, 0, .015, 40), scale=(1, 1, el), offset=(0, bh + .032, .05))
    if not lid_closed:
        lid = rotate(lid, "x", -_u(rng, 1.35, 1.5), (0, bh + .04, .05 - R * el * .8 + .02))
    return {"bowl": bowl, "tank": tank, "seat": [ring, lid]}


def mushroom(rng):
    h, rs = _u(rng, .3, .7), _u(rng, .05, .12)
    stem = lathe(np.concatenate([[(0, 0)], _smooth_profile([(rs * _u(rng, 1, 1.5), 0.0), (rs, h * .35), (rs * _u(rng, .7, 1.0), h)], 8)]), 24)
    R, ch = _u(rng, .15, .4), _u(rng, .08, .3)
    style = _pick(rng, ["dome", "cone", "flat"])
    t = np.linspace(0, 1, 14)
    if style == "cone":
        dome = np.stack([R * (1 - t), h + .02 + ch * t], 1)
    else:
        p = 2.0 if style == "dome" else 6.0
        dome = np.stack([R * np.cos(t * np.pi / 2), h + .02 + ch * np.sin(t * np.pi / 2) ** (2 / p)], 1)
    cap = lathe(np.concatenate([[(rs * .8, h - .01)], dome]), 40, caps=False)
    return {"cap": cap, "stem": stem}


def tree(rng):
    ht, r0 = _u(rng, .25, .5), _u(rng, .03, .07)
    trunk = frustum(r0, r0 * .6, 0, ht + .05, 16)
    if rng.random() < .5:  # conifer: stacked cones
        n, H, R = int(rng.integers(1, 5)), _u(rng, .6, 1.2), _u(rng, .2, .45)
        crown = []
        for i in range(n):
            y0 = ht + i * H / (n + 1) * .9
            rr = R * (1 - i / (n + 1))
            crown.append(frustum(rr, 0, y0, y0 + H * 1.4 / (n + .5) + (n - i) * .02, 24))
    else:  # broadleaf: a cluster of blobs
        n, R = int(rng.integers(1, 7)), _u(rng, .2, .4)
        crown = [ellipsoid((R, R * _u(rng, .7, 1.1), R), (0, ht + R * .8, 0), 20, 12)]
        for _ in range(n - 1):
            a, rr = _u(rng, 0, TAU), R * _u(rng, .45, .75)
            crown.append(ellipsoid((rr,) * 3, (R * .7 * np.cos(a), ht + R * _u(rng, .4, 1.4), R * .7 * np.sin(a)), 16, 10))
    return {"trunk": trunk, "crown": crown}


def house(rng):
    W, Hw, D = _u(rng, .8, 1.4), _u(rng, .5, .8), _u(rng, .6, 1.0)
    walls = box((W, Hw, D), (0, Hw / 2, 0))
    ov, rh = _u(rng, .03, .1), _u(rng, .25, .55)
    if rng.random() < .6:  # gable roof, ridge along x
        roof = transform(prism([(-D / 2 - ov, Hw), (D / 2 + ov, Hw), (0, Hw + rh)], W + 2 * ov), rotation("y", np.pi / 2))
        ridge = lambda x, z: Hw + rh * (1 - abs(z) / (D / 2 + ov))
    else:  # hip roof: a four-sided pyramid
        roof = transform(rotate(lathe([(np.sqrt(2), Hw), (0, Hw + rh)], 4), "y", np.pi / 4), scale=(W / 2 + ov, 1, D / 2 + ov))
        ridge = lambda x, z: Hw + rh * (1 - max(abs(x) / (W / 2 + ov), abs(z) / (D / 2 + ov)))
    dw, dh = _u(rng, .12, .2), _u(rng, .25, .4) * Hw / .6
    door = box((dw, min(dh, Hw * .8), .03), (_u(rng, -.3, .3) * W, min(dh, Hw * .8) / 2, D / 2 + .01))
    cx, cz, cs = _u(rng, -.35, .35) * W, _u(rng, .1, .3) * D * _pick(rng, [-1, 1]), _u(rng, .06, .12)
    top = ridge(cx, cz) + _u(rng, .05, .2)
    chimney = box((cs, top - Hw, cs), (cx, (top + Hw) / 2, cz))
    return {"walls": walls, "roof": roof, "door": door, "chimney": chimney}


# ---------------------------------------------------------------- registry

CATEGORIES: dict = {
    "airplane": (airplane, ("fuselage", "wings", "tail", "engines")),
    "armchair": (armchair, ("seat", "back", "legs", "arms")),
    "bathtub": (bathtub, ("tub", "feet")),
    "bed": (bed, ("frame", "mattress", "headboard", "pillows")),
    "bench": (bench, ("seat", "legs")),
    "bicycle": (bicycle, ("wheels", "frame", "handlebar", "saddle")),
    "bookshelf": (bookshelf, ("sides", "shelves", "back")),
    "bottle": (bottle, ("body", "neck", "cap")),
    "bowl": (bowl, ("body", "foot")),
    "car": (car, ("body", "cabin", "wheels")),
    "chair": (chair, ("seat", "back", "legs")),
    "desk": (desk, ("top", "legs", "drawers")),
    "desk_lamp": (desk_lamp, ("base", "arm", "head")),
    "dresser": (dresser, ("body", "drawers", "handles")),
    "floor_lamp": (floor_lamp, ("base", "pole", "shade")),
    "guitar": (guitar, ("body", "neck", "head")),
    "hammer": (hammer, ("handle", "head")),
    "house": (house, ("walls", "roof", "door", "chimney")),
    "knife": (knife, ("blade", "handle")),
    "laptop": (laptop, ("base", "screen")),
    "monitor": (monitor, ("screen", "stand", "base")),
    "mug": (mug, ("body", "handle")),
    "mushroom": (mushroom, ("cap", "stem")),
    "rocket": (rocket, ("body", "nose", "fins")),
    "saucepan": (saucepan, ("body", "handle")),
    "sofa": (sofa, ("base", "back", "arms", "cushions")),
    "spoon": (spoon, ("bowl", "handle")),
    "stool": (stool, ("seat", "legs")),
    "table": (table, ("top", "legs")),
    "toilet": (toilet, ("bowl", "tank", "seat")),
    "tree": (tree, ("trunk", "crown")),
    "umbrella": (umbrella, ("canopy", "pole", "handle")),
    "vase": (vase, ("body", "neck")),
    "wineglass": (wineglass, ("bowl", "stem", "foot")),
}
