"""Render procedural samples, coloured by part, into one PNG: a quick look that shapes read right.

    python -m recon_serve.data.procedural.render --out docs/procedural_samples.png
Needs matplotlib (the `docs` extra).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import CATEGORIES, generate

SHOWCASE = ["chair", "armchair", "table", "sofa", "bed", "bookshelf", "floor_lamp", "mug", "bottle",
            "airplane", "car", "bicycle", "guitar", "umbrella", "toilet", "house"]


def scatter_parts(ax, points_zup, labels, names, title: str, point_size: float = 1.5) -> None:
    """A 3D scatter of z-up points coloured by part label, equal axes, with a legend of part names."""
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10").colors
    p = points_zup
    for i, name in enumerate(names):
        m = labels == i
        if m.any():
            ax.scatter(p[m, 0], p[m, 1], p[m, 2], s=point_size, color=colours[i % 10], label=name, depthshade=False)
    lo, hi = p.min(0), p.max(0)
    c, r = (lo + hi) / 2, (hi - lo).max() / 2
    ax.set_xlim(c[0] - r, c[0] + r), ax.set_ylim(c[1] - r, c[1] + r), ax.set_zlim(c[2] - r, c[2] + r)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=20, azim=-60)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left", fontsize=7, markerscale=4, frameon=False)


def render_grid(out, categories=None, seeds=(0,), n_points: int = 2048, cols: int = 4, dpi: int = 90) -> Path:
    """One 3D scatter panel per (category, seed), with a legend of that category's parts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(c, s) for c in (categories or SHOWCASE) for s in seeds]
    rows = -(-len(items) // cols)
    fig = plt.figure(figsize=(3.6 * cols, 3.6 * rows))
    for k, (cat, seed) in enumerate(items):
        shape = generate(cat, seed, n_points)
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        p = shape.points
        # matplotlib draws z up: (x, -z, y) is a proper rotation taking +y up to +z
        scatter_parts(ax, p[:, [0, 2, 1]] * [1, -1, 1], shape.labels, shape.part_names, f"{cat} (seed {seed})")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/procedural_samples.png"))
    ap.add_argument("--categories", nargs="*", choices=sorted(CATEGORIES), help=f"default: {' '.join(SHOWCASE)}")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--points", type=int, default=2048)
    args = ap.parse_args(argv)
    print(render_grid(args.out, args.categories, args.seeds, args.points))


if __name__ == "__main__":
    main()
