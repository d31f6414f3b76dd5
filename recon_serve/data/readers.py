"""The project's one place that turns point-cloud and mesh files into float32 numpy arrays.

Readers never normalise: that is `recon_serve.geometry.normalise.normalise`, applied by callers.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np

MESH_EXTS = (".obj", ".stl", ".ply", ".glb", ".gltf", ".3mf")
SUPPORTED_EXTS = (".pcd", ".off", ".txt", ".npy") + MESH_EXTS


class NonFiniteError(ValueError):
    """A file whose coordinates include NaN or infinity (a ValueError, so old callers still catch it)."""


def _read_bytes(path_or_bytes) -> bytes:
    """Accept a path or the file's bytes, so servers can read uploads without temp files."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    return Path(path_or_bytes).read_bytes()


def read_pcd(path_or_bytes) -> np.ndarray:
    """Read x, y, z of a PCD v0.7 file (DATA ascii or binary) as float32 [N, 3]."""
    data = _read_bytes(path_or_bytes)
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = data.index(b"\n", pos)
        line = data[pos:end].decode("ascii", "replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    fields = header["FIELDS"]
    sizes = [int(s) for s in header.get("SIZE", ["4"] * len(fields))]
    types = header.get("TYPE", ["F"] * len(fields))
    counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
    n = int(header.get("POINTS", header.get("WIDTH", ["0"]))[0])
    kind = header["DATA"][0].lower()
    cols = [f for f, c in zip(fields, counts) for _ in range(c)]
    try:
        xyz_cols = [cols.index(a) for a in ("x", "y", "z")]
    except ValueError as e:
        raise ValueError("PCD file has no x/y/z fields") from e
    if kind == "ascii":
        arr = np.loadtxt(data[pos:].decode("ascii").splitlines(), dtype=np.float64, ndmin=2)
        return arr[:, xyz_cols].astype(np.float32)
    if kind != "binary":
        raise ValueError(f"PCD DATA {kind!r} is not supported (ascii or binary)")
    code = {"F": "f", "I": "i", "U": "u"}
    per_col = [(t, s) for t, s, c in zip(types, sizes, counts) for _ in range(c)]
    dtype = np.dtype([(f"c{j}", f"<{code[t]}{s}") for j, (t, s) in enumerate(per_col)])
    rec = np.frombuffer(data, dtype=dtype, count=n, offset=pos)
    return np.stack([rec[f"c{i}"] for i in xyz_cols], axis=1).astype(np.float32)


# ---------------------------------------------------------------- OFF (ModelNet meshes)

_OFF_HEADER = re.compile(r"^[A-Z]*OFF(.*)$", re.IGNORECASE)


def _off_lines(text: str) -> list[str]:
    """Lines of an OFF file without comments (# to end of line) and blank lines."""
    lines = (ln.split("#", 1)[0].strip() for ln in text.splitlines())
    return [ln for ln in lines if ln]


def _off_counts(lines: list[str]) -> tuple[int, int, int]:
    """(V, F, index of first vertex line); copes with ModelNet's 'OFF490 518 0' header."""
    m = _OFF_HEADER.match(lines[0]) if lines else None
    if not m:
        raise ValueError("not an OFF file: the first line must start with 'OFF'")
    rest, start = m.group(1).split(), 1
    if not rest:
        if len(lines) < 2:
            raise ValueError("truncated OFF file: no vertex/face counts")
        rest, start = lines[1].split(), 2
    try:
        nv, nf = int(rest[0]), int(rest[1])
    except (IndexError, ValueError) as e:
        raise ValueError(f"invalid OFF counts line: {' '.join(rest)!r}") from e
    if nv < 0 or nf < 0:
        raise ValueError(f"invalid OFF counts: {nv} vertices, {nf} faces")
    return nv, nf, start


def _off_faces(lines: list[str], nv: int) -> np.ndarray:
    """Triangles [F',3] from OFF face lines; polygons become fans, trailing colours ignored."""
    tris: list[tuple[int, int, int]] = []
    for ln in lines:
        tok = ln.split()
        try:
            k = int(tok[0])
            idx = [int(t) for t in tok[1:1 + k]]
        except ValueError as e:
            raise ValueError(f"invalid OFF face line: {ln!r}") from e
        if k < 3 or len(idx) < k:
            raise ValueError(f"invalid OFF face line (needs >= 3 indices): {ln!r}")
        tris.extend((idx[0], idx[j], idx[j + 1]) for j in range(1, k - 1))
    faces = np.array(tris, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= nv):
        raise ValueError(f"OFF face index out of range for {nv} vertices")
    return faces


def read_off(path_or_bytes) -> tuple[np.ndarray, np.ndarray]:
    """(vertices float32 [V,3], triangle faces int64 [F,3]) of a ModelNet-style OFF file."""
    lines = _off_lines(_read_bytes(path_or_bytes).decode("latin-1"))
    nv, nf, start = _off_counts(lines)
    body = lines[start:]
    if len(body) < nv + nf:
        raise ValueError(f"truncated OFF file: expected {nv} vertices and {nf} faces, "
                         f"found {len(body)} data lines")
    try:
        verts = np.array([ln.split()[:3] for ln in body[:nv]], dtype=np.float64).reshape(nv, 3)
    except ValueError as e:
        raise ValueError("invalid OFF vertex line (needs 3 numbers)") from e
    if not np.isfinite(verts).all():
        raise NonFiniteError("OFF file has non-finite vertex coordinates")
    return verts.astype(np.float32), _off_faces(body[nv:nv + nf], nv)


# ---------------------------------------------------------------- data-set point formats

def _loadtxt(path_or_bytes, delimiter=None) -> np.ndarray:
    """A numeric text table as float64 [rows, cols], with a clear error if it is not one."""
    text = _read_bytes(path_or_bytes).decode("latin-1").splitlines()
    if not any(ln.strip() and not ln.lstrip().startswith("#") for ln in text):
        raise ValueError("point table is empty")
    try:
        return np.loadtxt(text, dtype=np.float64, delimiter=delimiter, ndmin=2)
    except ValueError as e:
        raise ValueError(f"not a numeric point table: {e}") from e


def read_modelnet40_txt(path_or_bytes, normals: bool = False) -> np.ndarray:
    """modelnet40_normal_resampled 'x,y,z,nx,ny,nz' lines as float32 [N,3] (or [N,6] with normals)."""
    arr = _loadtxt(path_or_bytes, delimiter=",")
    cols = 6 if normals else 3
    if arr.shape[1] < cols:
        raise ValueError(f"ModelNet40 txt needs {cols} columns, found {arr.shape[1]}")
    return arr[:, :cols].astype(np.float32)


def read_shapenet55_npy(path_or_bytes) -> np.ndarray:
    """A ShapeNet-55 .npy point cloud as float32 [N,3]."""
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    arr = np.load(src, allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ValueError(f"expected a [N,3] point array, got shape {arr.shape}")
    return arr[:, :3].astype(np.float32)


def read_shapenetpart_txt(path_or_bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ShapeNetPart 'x y z nx ny nz label' lines as (points [N,3], normals [N,3], labels int64 [N])."""
    arr = _loadtxt(path_or_bytes)
    if arr.shape[1] != 7:
        raise ValueError(f"ShapeNetPart txt needs 7 columns, found {arr.shape[1]}")
    labels = np.rint(arr[:, 6])
    if not np.array_equal(labels, arr[:, 6]):
        raise ValueError("ShapeNetPart part labels must be integers")
    return arr[:, :3].astype(np.float32), arr[:, 3:6].astype(np.float32), labels.astype(np.int64)


def read_npz_points(path_or_bytes, key: str = "points") -> np.ndarray:
    """An .npz point cloud as float32 [N,3]: the array named `key` if there is one, else the first."""
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    with np.load(src, allow_pickle=False) as z:
        if not z.files:
            raise ValueError("npz file holds no arrays")
        arr = z[key if key in z.files else z.files[0]]
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ValueError(f"expected a [N,3] point array, got shape {arr.shape}")
    return arr[:, :3].astype(np.float32)


def read_scanobjectnn_h5(path, with_mask: bool = False):
    """ScanObjectNN h5 as (points [M,N,3], labels int64 [M]), plus mask [M,N] or None if asked."""
    import h5py

    with h5py.File(path, "r") as f:
        if "data" not in f or "label" not in f:
            raise ValueError("ScanObjectNN h5 needs datasets 'data' and 'label'")
        points = np.asarray(f["data"][..., :3], dtype=np.float32)
        labels = np.asarray(f["label"]).reshape(-1).astype(np.int64)
        mask = np.asarray(f["mask"]).astype(np.int64) if with_mask and "mask" in f else None
    if points.ndim != 3 or len(labels) != len(points):
        raise ValueError(f"ScanObjectNN shapes disagree: data {points.shape}, label {labels.shape}")
    return (points, labels, mask) if with_mask else (points, labels)


# ---------------------------------------------------------------- sampling and dispatch

def sample_mesh(vertices, faces, n: int, seed: int = 0) -> np.ndarray:
    """n points uniform over the mesh surface (area-weighted triangles), float32 [n,3], seeded."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[np.asarray(faces, dtype=np.int64)]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("mesh has no surface area to sample")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tri), size=n, p=areas / total)
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    a, b, c = tri[pick, 0], tri[pick, 1], tri[pick, 2]
    pts = (1 - r1)[:, None] * a + (r1 * (1 - r2))[:, None] * b + (r1 * r2)[:, None] * c
    return pts.astype(np.float32)


def resample_points(points: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Exactly n points, seeded: unchanged if n already, a random subset (no repeats) if more, and
    if fewer every point once plus random repeats, shuffled."""
    points = np.asarray(points)
    if len(points) == n:
        return points.astype(np.float32)
    rng = np.random.default_rng(seed)
    if len(points) > n:
        idx = rng.choice(len(points), size=n, replace=False)
    else:
        idx = rng.permutation(np.concatenate([np.arange(len(points)), rng.choice(len(points), size=n - len(points))]))
    return points[idx].astype(np.float32)



def _trimesh_geometry(data: bytes, ext: str, process: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) of every mesh in a trimesh file, world transforms applied; faces may be empty.

    force="scene" rather than "mesh": "mesh" drops vertex-only PLY clouds and, for textured
    OBJ, deep-copies materials, which needs Pillow. process=True lets trimesh merge vertices and
    silently drop non-finite ones (with their faces); read_trimesh keeps the raw data instead.
    """
    import trimesh

    try:
        scene = trimesh.load(io.BytesIO(data), file_type=ext, force="scene", process=process)
    except ImportError:
        raise
    except Exception as e:  # trimesh raises many types on malformed input
        raise ValueError(f"cannot read .{ext} file: {e}") from e
    verts, faces, offset = [], [], 0
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geom = scene.geometry[name]
        v = np.asarray(geom.vertices, dtype=np.float64)
        verts.append(v @ transform[:3, :3].T + transform[:3, 3])
        f = np.asarray(getattr(geom, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
        faces.append(f + offset)
        offset += len(v)
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(verts), np.concatenate(faces)


# Each pattern starts with a literal newline (faster than ^ with re.M); callers prepend one.
_OBJ_SHORT_FACE = re.compile(rb"\n[ \t]*f(?:[ \t]+[^ \t\r\n]+){0,2}[ \t]*\r?(?=\n|$)")
_OBJ_ZERO_INDEX = re.compile(rb"\n[ \t]*f[ \t](?:[^\n]*[ \t])?[-+]?0+(?=[/ \t\r\n]|$)")
_OBJ_NEGATIVE_FACE = re.compile(rb"\n[ \t]*f[ \t][^\n]*?[ \t]-\d")
_OBJ_VERTEX = re.compile(rb"\n[ \t]*v[ \t]")


def _line_at(data: bytes, pos: int) -> str:
    end = data.find(b"\n", pos + 1)
    return data[pos:end if end >= 0 else len(data)].strip().decode("latin-1")[:80]


def check_obj_faces(data: bytes) -> None:
    """Raise ValueError for OBJ face lines that trimesh would silently drop or misread.

    A face needs >= 3 vertices (trimesh drops shorter ones) and OBJ indices start at 1 (trimesh
    misreads 0). Negative indices count back from the vertices read so far, but trimesh
    counts from the end of the file, so they are refused when more vertices follow them.
    About 1.5 s for a 50 MB OBJ.
    """
    text = b"\n" + data
    if m := _OBJ_SHORT_FACE.search(text):
        raise ValueError(f"OBJ face with fewer than 3 vertices: {_line_at(text, m.start())!r}")
    if m := _OBJ_ZERO_INDEX.search(text):
        raise ValueError(f"OBJ face index 0 (indices start at 1): {_line_at(text, m.start())!r}")
    if (m := _OBJ_NEGATIVE_FACE.search(text)) and _OBJ_VERTEX.search(text, m.end()):
        raise ValueError("OBJ relative (negative) face indices followed by more vertices are not supported")


def read_trimesh(data: bytes, ext: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw (vertices float64 [V,3], faces int64 [F,3]) of an OBJ/STL/PLY/GLB/glTF/3MF/STEP file.

    Nothing is repaired: non-finite vertices and out-of-range faces stay for the caller to refuse
    (trimesh's processing would drop them silently), and malformed OBJ faces raise ValueError.
    """
    if ext.lower() == "obj":
        check_obj_faces(data)
    return _trimesh_geometry(data, ext, process=False)


def _surface_or_points(vertices, faces, n: int, seed: int, name: str) -> np.ndarray:
    """Sample the surface if there are faces, else resample the vertices as a point cloud."""
    if len(vertices) == 0:
        raise ValueError(f"{name} is empty")
    if len(faces):
        return sample_mesh(vertices, faces, n, seed)
    return resample_points(np.asarray(vertices), n, seed)


def load_points(path, n: int = 1024, seed: int = 0, data: bytes | None = None) -> np.ndarray:
    """Any supported file as float32 [n,3] raw (un-normalised) points; `data` overrides reading path."""
    name = os.path.basename(str(path))
    ext = os.path.splitext(name)[1].lower()
    if ext not in SUPPORTED_EXTS:
        raise ValueError(f"unsupported file type {ext or name!r}; supported: {', '.join(SUPPORTED_EXTS)}")
    raw = _read_bytes(path if data is None else data)
    if ext == ".off":
        pts = _surface_or_points(*read_off(raw), n, seed, name)
    elif ext in MESH_EXTS:
        pts = _surface_or_points(*_trimesh_geometry(raw, ext[1:]), n, seed, name)
    else:
        reader = {".pcd": read_pcd, ".txt": read_modelnet40_txt, ".npy": read_shapenet55_npy}[ext]
        cloud = reader(raw)
        if len(cloud) == 0:
            raise ValueError(f"{name} is empty")
        pts = resample_points(cloud, n, seed)
    if not np.isfinite(pts).all():
        raise NonFiniteError(f"{name} has non-finite coordinates")
    return pts
