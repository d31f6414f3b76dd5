"""Packed point-cloud sets: one `.npz` per set (`points` [N,P,3] float16, `label`, `class_names`,
`split`, `id`), as ../shared/data ships them and as `recon-train sources` writes its splits."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class PackedSet:
    """Shapes of one set, float32 and unit-sphere normalised; ids are the source's own paths."""

    points: np.ndarray  # [N, P, 3] float32
    labels: np.ndarray  # [N] int64, index into class_names
    class_names: list[str]
    split: np.ndarray  # [N] str
    ids: np.ndarray  # [N] str
    name: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask) -> "PackedSet":
        return PackedSet(self.points[mask], self.labels[mask], self.class_names, self.split[mask], self.ids[mask], self.name)


def load_packed(path: str | os.PathLike, name: str | None = None) -> PackedSet:
    """Read a packed set; float16 points are cast to float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such packed set")
    with np.load(path, allow_pickle=False) as z:
        missing = {"points", "label", "class_names"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: not a packed set (missing {sorted(missing)})")
        pts = z["points"].astype(np.float32)
        if pts.ndim != 3 or pts.shape[-1] != 3:
            raise ValueError(f"{path}: points must be [N, P, 3], got {list(pts.shape)}")
        n = len(pts)
        split = z["split"].astype(str) if "split" in z.files else np.full(n, "", dtype=object).astype(str)
        ids = z["id"].astype(str) if "id" in z.files else np.array([f"{i:06d}" for i in range(n)])
        return PackedSet(pts, z["label"].astype(np.int64), [str(c) for c in z["class_names"]], split, ids,
                         name or path.stem)


def save_packed(path: str | os.PathLike, s: PackedSet) -> None:
    """Write a set in the packed layout (float16 points), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, points=s.points.astype(np.float16), label=s.labels.astype(np.int16),
             class_names=np.array(s.class_names), split=np.asarray(s.split).astype(str), id=np.asarray(s.ids).astype(str))
    os.replace(tmp, path)
