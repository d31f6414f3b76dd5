"""How much of each generated category lies buried inside another part when every part's whole
surface is sampled (`generate(..., outer_only=False)`): the labels no point cloud can show, and the
reason the generator samples only the outer surface.

    python -m training.buried_points --per-category 5
"""
from __future__ import annotations

import argparse

import numpy as np

from recon_serve.data.procedural import CATEGORIES, assemble, generate, split_seeds
from recon_serve.data.procedural.primitives import inside


def buried_fraction(category: str, seed: int, n_points: int = 2048, outer_only: bool = False) -> float:
    """Share of a sample's points whose outward nudge lands inside another part's solid."""
    shape = generate(category, seed, n_points, outer_only=outer_only)
    prims = assemble(category, seed)[0]
    hidden = np.zeros(n_points, dtype=bool)
    for i in range(len(prims)):
        sel = shape.labels == i
        others = [m for j, part in enumerate(prims) if j != i for m in part]
        hidden[sel] = inside(shape.points[sel].astype(np.float64) + 1e-4 * shape.normals[sel], others)
    return float(hidden.mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-category", type=int, default=5, help="test-split samples per category")
    args = ap.parse_args(argv)
    rows = {c: 100 * np.mean([buried_fraction(c, s) for s in split_seeds("test", args.per_category)]) for c in CATEGORIES}
    for c, v in sorted(rows.items(), key=lambda kv: -kv[1]):
        print(f"{c:12s} {v:5.1f} % of points buried")


if __name__ == "__main__":
    main()
