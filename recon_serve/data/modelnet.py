"""ModelNet10 as the shared data lays it out: <root>/modelnet10/<class>/{train,test}/*.pcd.

The whole split is small (4,899 x 1,024 points), so it is read once and cached as one .npz.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from recon_serve.data.readers import read_pcd
from recon_serve.geometry.normalise import normalise

DATA_ENV = "RECON_DATA"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: explicit argument, else $RECON_DATA, else ../shared/data next to the project."""
    if root:
        return Path(root)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _cache_dir() -> Path:
    d = Path(os.environ.get("RECON_CACHE", Path.home() / ".cache" / "recon-serve"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_modelnet10(split: str, root=None) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(points [N,1024,3] normalised, labels [N], class names, file ids) for 'train' or 'test'."""
    base = data_root(root) / "modelnet10"
    if not base.is_dir():
        raise FileNotFoundError(f"ModelNet10 not found under {base} (set ${DATA_ENV} or --data)")
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    files = sorted((c, f) for c in classes for f in (base / c / split).glob("*.pcd"))
    key = hashlib.sha1(("|".join(str(f) for _, f in files)).encode()).hexdigest()[:12]
    cache = _cache_dir() / f"modelnet10-{split}-{key}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["points"], z["labels"], classes, [f.stem for _, f in files]
    points = np.stack([normalise(read_pcd(f)) for _, f in files]).astype(np.float32)
    labels = np.array([classes.index(c) for c, _ in files], dtype=np.int64)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, points=points, labels=labels)
    os.replace(tmp, cache)
    return points, labels, classes, [f.stem for _, f in files]
