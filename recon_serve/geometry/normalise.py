"""Normalisation as ReCon does it: centre on the mean, scale into the unit sphere."""
from __future__ import annotations

import math

import numpy as np


def normalise(points: np.ndarray) -> np.ndarray:
    """Centre [N,3] points on their mean and scale the farthest point to radius 1."""
    return normalise_with_frame(points)[0]


def normalise_with_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(normalised float32 points, centre [3] float64, radius; 1.0 for a single point) in one pass.
    Computed in float64: coordinates near the float32 limit (1e38) overflow float32 sums and squares.
    Written with few numpy calls (the mean as sum / n, the radius as sqrt of the largest squared norm,
    both exactly what np.mean and max(sqrt) give): each call costs several times its warm price when a model
    call has just pushed numpy out of the CPU caches, as it has for every request a server prepares."""
    pts = np.array(points, dtype=np.float64)
    centre = pts.sum(axis=0) / len(pts)
    pts -= centre
    radius = math.sqrt(float((pts * pts).sum(axis=1).max()))
    if radius > 0:
        pts /= radius
    return pts.astype(np.float32), centre, radius if radius > 0 else 1.0
