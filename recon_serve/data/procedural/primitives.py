"""Triangle-mesh primitives as numpy (vertices float64 [V,3], faces int64 [F,3]) pairs.

Small and dependency-free so that the generator is fast and bit-for-bit deterministic.
Conventions: +y is up; faces wind counter-clockwise seen from outside (outward normals).
"""
from __future__ import annotations

import numpy as np

Mesh = tuple[np.ndarray, np.ndarray]
TAU = 2 * np.pi


def _grid_faces(nu: int, nv: int, wrap_u: bool, wrap_v: bool) -> np.ndarray:
    """Two triangles per cell of a (nu x nv) vertex grid, index i*nv + j; wrapping closes a loop."""
    iu = np.arange(nu if wrap_u else nu - 1)
    jv = np.arange(nv if wrap_v else nv - 1)
    i, j = np.meshgrid(iu, jv, indexing="ij")
    i, j = i.ravel(), j.ravel()
    i1, j1 = (i + 1) % nu, (j + 1) % nv
    a, b, c, d = i * nv + j, i * nv + j1, i1 * nv + j, i1 * nv + j1
    return np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)]).astype(np.int64)


def lathe(profile, segments: int = 32, caps: bool = True) -> Mesh:
    """Revolve a (radius, y) polyline, listed bottom to top, about the y axis.

    The workhorse for bottles, vases, bowls, shades and cones. Ends with radius > 0 get a
    flat cap when `caps`; radius-0 ends close on their own (zero-area triangles are never sampled).
    """
    prof = np.asarray(profile, dtype=np.float64)
    th = np.arange(segments) * TAU / segments
    r, y = prof[:, :1], prof[:, 1:2]
    v = np.stack([r * np.cos(th), np.broadcast_to(y, (len(prof), segments)), r * np.sin(th)], -1).reshape(-1, 3)
    faces = [_grid_faces(len(prof), segments, False, True)]
    verts = [v]
    j = np.arange(segments)
    for end, sign in ((0, -1), (len(prof) - 1, 1)):
        if caps and prof[end, 0] > 1e-9:
            centre = len(v) + len(verts) - 1
            verts.append(np.array([[0.0, prof[end, 1], 0.0]]))
            ring = end * segments + j
            nxt = end * segments + (j + 1) % segments
            tri = np.stack([np.full(segments, centre), ring, nxt], 1) if sign < 0 else \
                np.stack([np.full(segments, centre), nxt, ring], 1)
            faces.append(tri)
    return np.concatenate(verts), np.concatenate(faces).astype(np.int64)


def shell(profile, thickness: float, segments: int = 32) -> Mesh:
    """An open container (cup, bowl, tub) from its outer (radius, y) profile: outer wall, rim, inner wall.

    The outer profile should start at the bottom centre (0, y0); the inner wall is the same
    curve moved `thickness` inwards and up, so the surface is a closed solid.
    """
    prof = np.asarray(profile, dtype=np.float64)
    inner = np.stack([np.maximum(prof[:, 0] - thickness, 0.0), np.maximum(prof[:, 1], prof[0, 1] + thickness)], 1)
    inner[-1, 1] = prof[-1, 1]
    return lathe(np.concatenate([prof, inner[::-1]]), segments, caps=False)


def frustum(r0: float, r1: float, y0: float, y1: float, segments: int = 24, caps: bool = True) -> Mesh:
    """A capped cone frustum (a cylinder when r0 == r1) about the y axis from y0 to y1."""
    return lathe([(r0, y0), (r1, y1)], segments, caps)


def cylinder(radius: float, y0: float, y1: float, segments: int = 24) -> Mesh:
    """A capped cylinder about the y axis."""
    return frustum(radius, radius, y0, y1, segments)


def ellipsoid(radii, centre=(0, 0, 0), segments: int = 24, rings: int = 12) -> Mesh:
    """An ellipsoid with semi-axes `radii` (a sphere when all equal)."""
    phi = np.linspace(0, np.pi, rings + 1)
    v, f = lathe(np.stack([np.sin(phi), -np.cos(phi)], 1), segments)
    return v * np.asarray(radii, dtype=np.float64) + np.asarray(centre, dtype=np.float64), f


def box(size, centre=(0, 0, 0)) -> Mesh:
    """An axis-aligned box of extents `size` around `centre`."""
    v = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))], dtype=np.int64)
    return v * np.asarray(size, dtype=np.float64) + np.asarray(centre, dtype=np.float64), f


def prism(polygon, depth: float) -> Mesh:
    """A convex (x, y) polygon, counter-clockwise, extruded along z over [-depth/2, depth/2].

    For flat parts with an outline: wings, fins, blades, gable roofs, car bodies.
    """
    p = np.asarray(polygon, dtype=np.float64)
    n = len(p)
    lo = np.column_stack([p, np.full(n, -depth / 2)])
    hi = np.column_stack([p, np.full(n, depth / 2)])
    i = np.arange(n)
    i1 = (i + 1) % n
    k = np.arange(1, n - 1)
    faces = np.concatenate([
        np.stack([n + 0 * k, n + k, n + k + 1], 1),  # top (+z)
        np.stack([0 * k, k + 1, k], 1),  # bottom (-z)
        np.stack([i, i1, n + i1], 1), np.stack([i, n + i1, n + i], 1),  # sides
    ])
    return np.concatenate([lo, hi]), faces.astype(np.int64)


def torus(major: float, minor: float, arc: float = TAU, start: float = 0.0,
          segments: int = 32, tube_segments: int = 10) -> Mesh:
    """A torus (or an arc of one) lying in the xy plane around the z axis: wheels, handles, hooks."""
    full = arc >= TAU - 1e-9
    nu = segments if full else segments + 1
    u = start + np.arange(nu) * arc / segments
    w = np.arange(tube_segments) * TAU / tube_segments
    uu, ww = np.meshgrid(u, w, indexing="ij")
    ring = major + minor * np.cos(ww)
    v = np.stack([ring * np.cos(uu), ring * np.sin(uu), minor * np.sin(ww)], -1).reshape(-1, 3)
    return v, _grid_faces(nu, tube_segments, full, True)


# ---------------------------------------------------------------- transforms

def rotation(axis: str, angle: float) -> np.ndarray:
    """3x3 right-handed rotation about 'x', 'y' or 'z'."""
    c, s = np.cos(angle), np.sin(angle)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def transform(mesh: Mesh, rot=None, offset=(0, 0, 0), scale=1.0) -> Mesh:
    """Scale (scalar or per-axis), then rotate, then translate; mirrored scales keep faces outward."""
    v, f = mesh
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (3,))
    v = v * s
    if rot is not None:
        v = v @ np.asarray(rot).T
    if np.prod(s) < 0:
        f = f[:, ::-1]
    return v + np.asarray(offset, dtype=np.float64), f


def rotate(mesh: Mesh, axis: str, angle: float, about=(0, 0, 0)) -> Mesh:
    """Rotate about an axis through the point `about`."""
    about = np.asarray(about, dtype=np.float64)
    v, f = transform((mesh[0] - about, mesh[1]), rotation(axis, angle))
    return v + about, f


def translate(mesh: Mesh, offset) -> Mesh:
    return transform(mesh, offset=offset)


def rod(p0, p1, r0: float, r1: float | None = None, segments: int = 12) -> Mesh:
    """A capped (possibly tapered) cylinder from point p0 to p1: legs, poles, frame tubes."""
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    d = p1 - p0
    length = float(np.linalg.norm(d))
    v, f = frustum(r0, r0 if r1 is None else r1, 0.0, length, segments)
    return transform((v, f), _align_y(d / length), p0)


def _align_y(d: np.ndarray) -> np.ndarray:
    """The rotation taking +y onto the unit vector d (Rodrigues)."""
    y = np.array([0.0, 1.0, 0.0])
    c = float(y @ d)
    if c < -1 + 1e-9:
        return np.diag([1.0, -1.0, -1.0])
    k = np.cross(y, d)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + kx + kx @ kx / (1 + c)


def merge(meshes) -> Mesh:
    """One mesh from many (face indices shifted)."""
    verts, faces, off = [], [], 0
    for v, f in meshes:
        verts.append(v)
        faces.append(f + off)
        off += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def face_areas(mesh: Mesh) -> np.ndarray:
    v, f = mesh
    t = v[f]
    return 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)


def winding_number(points: np.ndarray, mesh: Mesh, chunk: int = 128) -> np.ndarray:
    """Generalised winding number of a closed mesh at each point [M]: 1 inside, 0 outside,
    1/2 on a face (signed solid angles of the faces, Van Oosterom and Strackee). Points go in
    chunks so the [chunk, F, 3] temporaries stay in cache."""
    v, f = mesh
    tri = v[f]  # [F,3,3]
    out = np.empty(len(points))
    for s in range(0, len(points), chunk):
        a, b, c = (tri[None, :, i] - points[s:s + chunk, None] for i in range(3))  # [m,F,3]
        la, lb, lc = (np.sqrt(np.einsum("mfk,mfk->mf", x, x)) for x in (a, b, c))
        det = np.einsum("mfk,mfk->mf", a, np.cross(b, c))
        den = la * lb * lc + np.einsum("mfk,mfk->mf", a, b) * lc + np.einsum("mfk,mfk->mf", b, c) * la \
            + np.einsum("mfk,mfk->mf", c, a) * lb
        out[s:s + chunk] = np.arctan2(det, den).sum(1) / (2 * np.pi)
    return out


def inside(points: np.ndarray, meshes, depth: float = 0.5) -> np.ndarray:
    """[M] bool: the point lies inside one of the closed `meshes` (winding number > depth). Points
    exactly on a face are undecided (1/2 either way); callers test just off the surface. Each
    mesh is tested only where its bounding box reaches."""
    hit = np.zeros(len(points), dtype=bool)
    for mesh in meshes:
        lo, hi = mesh[0].min(0), mesh[0].max(0)
        near = np.flatnonzero(~hit & (points >= lo).all(1) & (points <= hi).all(1))
        if len(near):
            hit[near[winding_number(points[near], mesh) > depth]] = True
    return hit
