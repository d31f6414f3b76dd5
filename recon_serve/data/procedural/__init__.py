"""Procedural part-labelled point clouds of everyday objects (a stand-in for ShapeNetPart).

No real part-labelled data is available here, so `generate(category, seed)` builds an object
from named part meshes with every size, count and style drawn from a seeded numpy Generator,
and samples its surface. The same (category, seed) always gives identical arrays.

    shape = generate("chair", seed=3)              # points [2048,3], labels [2048] (part index)
    ds = generate_dataset(per_category=20, split="train")
    write_shapenetpart_txt("chair_3.txt", shape.points, shape.labels, shape.normals)
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from recon_serve.data.readers import sample_mesh

from .categories import CATEGORIES
from .primitives import face_areas, inside, merge, rotation

__all__ = ["CATEGORIES", "Shape", "Dataset", "assemble", "generate", "generate_dataset", "split_seeds",
           "part_names", "label_offsets", "write_shapenetpart_txt", "write_ply", "write_parts_json"]

SPLITS = {"train": 0, "test": 1}
_SEEDS_PER_BASE = 10 ** 6


@dataclass
class Shape:
    points: np.ndarray  # [n,3] float32, +y up, largest extent 1, resting on y = 0
    labels: np.ndarray  # [n] int64, index into part_names
    normals: np.ndarray  # [n,3] float32 unit normals of the faces the points lie on
    category: str
    part_names: tuple[str, ...]


def _allocate(areas: np.ndarray, n: int, min_share: float) -> np.ndarray:
    """Points per part proportional to area, but at least ceil(min_share * n) each.

    Parts below the floor are pinned to it and the rest share what is left, repeated until
    stable; rounding goes to the largest remainders, so the counts sum to n exactly.
    """
    k = len(areas)
    floor = max(1, math.ceil(min_share * n))
    if k * floor > n:
        raise ValueError(f"{n} points cannot give {k} parts {floor} points each")
    share = np.asarray(areas, dtype=np.float64) / np.sum(areas)
    pinned = np.zeros(k, dtype=bool)
    while True:
        rest = n - floor * pinned.sum()
        want = np.where(pinned, floor, share * rest / share[~pinned].sum())
        low = ~pinned & (want < floor)
        if not low.any():
            break
        pinned |= low
    counts = np.where(pinned, floor, np.floor(want)).astype(np.int64)
    frac = np.where(pinned, -1.0, want - np.floor(want))
    counts[np.argsort(-frac, kind="stable")[: n - counts.sum()]] += 1
    return counts


def _unit_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    n = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)


def _sampled_faces(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int, points: np.ndarray):
    """The faces `sample_mesh(vertices, faces, n, seed)` put its points on, or None.

    sample_mesh returns points only; its first draw (area-weighted face choice) is replayed
    here and checked: every point must lie in its face's plane, else the caller searches.
    """
    tri = vertices[faces]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    pick = np.random.default_rng(seed).choice(len(tri), size=n, p=areas / areas.sum())
    off = np.abs(((points - tri[pick, 0]) * _unit_normals(vertices, faces[pick])).sum(1))
    tol = 1e-5 * max(1.0, float(np.ptp(vertices, axis=0).max()))
    return pick if (off <= tol).all() else None


def _nearest_faces(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The face each point lies on, searched geometrically (plane distance + barycentric slack)."""
    tri = vertices[faces]
    a, e0, e1 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    nrm = _unit_normals(vertices, faces)
    d00, d01, d11 = (e0 * e0).sum(1), (e0 * e1).sum(1), (e1 * e1).sum(1)
    den = np.where(np.abs(d00 * d11 - d01 ** 2) > 1e-24, d00 * d11 - d01 ** 2, np.inf)  # degenerate: never
    ae0, ae1, an = (a * e0).sum(1), (a * e1).sum(1), (a * nrm).sum(1)
    scale = np.sqrt(np.sqrt(d00 * d11))
    out = np.empty(len(points), dtype=np.int64)
    for s in range(0, len(points), 512):
        p = points[s:s + 512].astype(np.float64)
        d20, d21 = p @ e0.T - ae0, p @ e1.T - ae1
        v, w = (d11 * d20 - d01 * d21) / den, (d00 * d21 - d01 * d20) / den
        outside = np.maximum(-v, 0) + np.maximum(-w, 0) + np.maximum(v + w - 1, 0)
        score = np.abs(p @ nrm.T - an) + outside * scale + np.isinf(den) * 1e9
        out[s:s + 512] = np.argmin(score, axis=1)
    return out


def _sample(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int):
    """(points [n,3] float32, unit normals [n,3] float32) uniform on the surface, seeded."""
    p = sample_mesh(vertices, faces, n, seed=seed)
    picked = _sampled_faces(vertices, faces, n, seed, p)
    picked = _nearest_faces(vertices, faces, p) if picked is None else picked
    return p, _unit_normals(vertices, faces[picked]).astype(np.float32)


def _hidden(points: np.ndarray, normals: np.ndarray, earlier: list, later: list, eps: float = 1e-4) -> np.ndarray:
    """Points of one part that a real object would not show. Tested just off the surface (a point
    exactly on another mesh's face has no stable winding number): buried if the point nudged
    outwards is inside another part; on a face shared with a part declared later (a sofa's base
    flush with its arms) if the point nudged inwards is inside that part, so a shared face keeps
    one label."""
    p, n = points.astype(np.float64), normals.astype(np.float64)
    return inside(p + eps * n, earlier + later) | inside(p - eps * n, later)


def assemble(category: str, seed: int = 0, yaw: bool = False):
    """(closed primitive meshes of each declared part in the output frame, the shape's rng for what
    follows, a sampling seed per part)."""
    builder, names = CATEGORIES[category]
    rng = np.random.default_rng([int(seed), zlib.crc32(category.encode())])
    built = builder(rng)
    if set(built) != set(names):
        raise RuntimeError(f"{category} builder made parts {sorted(built)}, declared {sorted(names)}")
    prims = [built[p] if isinstance(built[p], list) else [built[p]] for p in names]
    allv = np.concatenate([v for part in prims for v, _ in part])
    lo, hi = allv.min(0), allv.max(0)
    origin = np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2])
    scale = 1.0 / float((hi - lo).max())
    seeds = rng.integers(0, 2 ** 31, size=len(names))
    turn = rotation("y", rng.uniform(0, 2 * np.pi)) if yaw else np.eye(3)
    return [[(((v - origin) * scale) @ turn.T, f) for v, f in part] for part in prims], rng, seeds


def generate(category: str, seed: int = 0, n_points: int = 2048, yaw: bool = False,
             min_share: float = 0.01, outer_only: bool = True) -> Shape:
    """One labelled object. Scaled so its largest extent is 1, centred in x/z, standing on y = 0
    (so models see similar sizes across categories); `yaw` adds a random turn about +y.

    Only the object's outer surface is sampled: where parts overlap (a sofa's base inside its
    arms, a car body under the cabin) the buried surface would carry a label no point cloud can
    show, so those points are drawn again elsewhere. Points go to parts by visible area.
    `outer_only=False` samples every part's whole surface (how the generator worked before).
    """
    names = CATEGORIES[category][1]
    prims, rng, seeds = assemble(category, seed, yaw)
    meshes = [merge(part) for part in prims]

    def visible_of(i, p, n):
        if not outer_only:
            return np.ones(len(p), dtype=bool)
        keep = ~_hidden(p, n, [m for part in prims[:i] for m in part], [m for part in prims[i + 1:] for m in part])
        return keep if keep.any() else ~keep  # wholly buried: keep it anyway, every declared part must appear

    draws = []  # per part: batches of visible (points, normals)
    for i, (v, f) in enumerate(meshes):
        p, n = _sample(v, f, n_points, int(seeds[i]))
        keep = visible_of(i, p, n)
        draws.append([(p[keep], n[keep])])
    visible = np.array([len(d[0][0]) / n_points for d in draws])
    counts = _allocate(np.array([face_areas(m).sum() for m in meshes]) * visible, n_points, min_share)
    pts, nrm, lab = [], [], []
    for i, ((v, f), c) in enumerate(zip(meshes, counts)):
        batch = 1
        while sum(len(p) for p, _ in draws[i]) < c:  # a part mostly buried but pinned to the floor
            p, n = _sample(v, f, n_points, int(seeds[i]) + batch)
            keep = visible_of(i, p, n)
            draws[i].append((p[keep], n[keep]))
            batch += 1
        pts.append(np.concatenate([p for p, _ in draws[i]])[:c])
        nrm.append(np.concatenate([n for _, n in draws[i]])[:c])
        lab.append(np.full(int(c), i, dtype=np.int64))
    order = rng.permutation(n_points)  # part order must not leak through point order
    return Shape(np.concatenate(pts)[order], np.concatenate(lab)[order], np.concatenate(nrm)[order],
                 category, tuple(names))


# ---------------------------------------------------------------- data sets

def split_seeds(split: str, count: int, seed: int = 0) -> list[int]:
    """Sample seeds of a split: train ones are even, test ones odd, so the two never meet."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if not 0 <= count <= _SEEDS_PER_BASE:
        raise ValueError(f"count must be in [0, {_SEEDS_PER_BASE}]")
    base = int(seed) * _SEEDS_PER_BASE
    return [2 * (base + i) + SPLITS[split] for i in range(count)]


def part_names(categories=None) -> list[str]:
    """The shared label space, 'category/part', categories in sorted order (as seg.py expects)."""
    cats = sorted(CATEGORIES) if categories is None else list(categories)
    return [f"{c}/{p}" for c in cats for p in CATEGORIES[c][1]]


def label_offsets(categories=None) -> dict[str, int]:
    """Where each category's parts start in the shared label space of `part_names`."""
    cats = sorted(CATEGORIES) if categories is None else list(categories)
    starts = np.cumsum([0] + [len(CATEGORIES[c][1]) for c in cats]).tolist()
    return dict(zip(cats, starts))


class Dataset(NamedTuple):
    points: np.ndarray  # [M,n,3] float32
    labels: np.ndarray  # [M,n] int64, global ids into part_names
    category_ids: np.ndarray  # [M] int64, into categories
    categories: list[str]
    part_names: list[str]  # 'category/part'
    category_parts: dict  # category -> its global part ids (for evaluate.part_miou)


def _generate_one(job) -> tuple[np.ndarray, np.ndarray]:
    category, seed, n_points, yaw = job
    shape = generate(category, seed, n_points, yaw)
    return shape.points, shape.labels


def generate_dataset(categories=None, per_category: int = 16, seed: int = 0, split: str = "train",
                     n_points: int = 2048, yaw: bool = False, progress: bool = False, workers: int | None = None) -> Dataset:
    """per_category shapes of each category with labels in one shared part space. Shapes are made in
    `workers` processes (default: one per core, for 64 shapes or more); each shape depends only on its
    own seed, so the set is the same for any number of workers."""
    cats = sorted(CATEGORIES) if categories is None else list(categories)
    names, offsets = part_names(cats), label_offsets(cats)
    seeds = split_seeds(split, per_category, seed)
    jobs = [(cats[ci], s, n_points, yaw) for ci in range(len(cats)) for s in seeds]
    workers = min(os.cpu_count() or 1, len(jobs) // 32) if workers is None else workers
    pool = None
    if workers > 1 and "fork" in mp.get_all_start_methods():  # fork: the workers run numpy only
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
        shapes = pool.map(_generate_one, jobs, chunksize=4)
    else:
        shapes = map(_generate_one, jobs)
    if progress:
        from tqdm import tqdm
        shapes = tqdm(shapes, total=len(jobs), desc=f"generate {split}")
    try:
        pts, labs = [], []
        for (category, *_), (points, labels) in zip(jobs, shapes):
            pts.append(points)
            labs.append(labels + offsets[category])
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    cat_ids = np.repeat(np.arange(len(cats), dtype=np.int64), per_category)
    empty = (0, n_points)
    return Dataset(np.stack(pts) if pts else np.zeros(empty + (3,), np.float32),
                   np.stack(labs) if labs else np.zeros(empty, np.int64), cat_ids, cats, names,
                   {c: list(range(offsets[c], offsets[c] + len(CATEGORIES[c][1]))) for c in cats})


# ---------------------------------------------------------------- writers

def write_shapenetpart_txt(path, points, labels, normals=None) -> None:
    """ShapeNetPart 'x y z nx ny nz label' lines; '%.9g' round-trips float32 exactly."""
    pts = np.asarray(points, dtype=np.float32)
    nrm = np.zeros_like(pts) if normals is None else np.asarray(normals, dtype=np.float32)
    lab = np.asarray(labels, dtype=np.int64)
    rows = np.column_stack([pts.astype(np.float64), nrm.astype(np.float64)])
    with open(path, "w") as f:
        for r, l in zip(rows, lab):
            f.write(" ".join("%.9g" % x for x in r) + f" {int(l)}\n")


def write_ply(path, points, labels) -> None:
    """ASCII PLY with float x, y, z and an int `label` per vertex (opens in MeshLab, CloudCompare)."""
    pts = np.asarray(points, dtype=np.float32)
    lab = np.asarray(labels, dtype=np.int64)
    header = ["ply", "format ascii 1.0", "comment recon-serve procedural shape", f"element vertex {len(pts)}",
              "property float x", "property float y", "property float z", "property int label", "end_header"]
    with open(path, "w") as f:
        f.write("\n".join(header) + "\n")
        for p, l in zip(pts.astype(np.float64), lab):
            f.write("%.9g %.9g %.9g %d\n" % (p[0], p[1], p[2], l))


def write_parts_json(path, categories=None) -> None:
    """The label space written next to a generated data set: categories, their parts, global names."""
    import json

    cats = sorted(CATEGORIES) if categories is None else list(categories)
    Path(path).write_text(json.dumps({
        "categories": {c: list(CATEGORIES[c][1]) for c in cats},
        "label_offsets": label_offsets(cats),  # file label = offset + index in the category's parts
        "part_names": part_names(cats)}, indent=1) + "\n")
