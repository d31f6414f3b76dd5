"""Normalisation as ReCon does it: centre on the mean, scale into the unit sphere."""
from __future__ import annotations

import numpy as np


def normalise(points: np.ndarray) -> np.ndarray:
    """Centre [N,3] points on their mean and scale the farthest point to radius 1. Computed in float64:
    coordinates near the float32 limit (1e38) overflow float32 sums and squares."""
    pts = np.asarray(points, dtype=np.float64)
    pts = pts - pts.mean(axis=0, keepdims=True)
    radius = float(np.sqrt((pts ** 2).sum(axis=1)).max())
    return (pts / radius if radius > 0 else pts).astype(np.float32)
