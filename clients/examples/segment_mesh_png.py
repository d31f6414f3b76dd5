"""Segment a mesh with a checkpoint and draw its points coloured by predicted part into a PNG.

    python clients/examples/segment_mesh_png.py ../shared/data/meshes/chair_model.obj --up y \
        --out docs/chair_model_segmented.png

The same path as the server's /v1/segment: decode -> prepare (sample, rotate to the model's z-up
frame, normalise) -> model -> the most likely category's parts. Needs matplotlib (the `docs` extra).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from recon_serve.data.procedural.render import scatter_parts
from recon_serve.evaluate import restrict_to_category
from recon_serve.geometry.decode import decode_upload
from recon_serve.geometry.preprocess import prepare
from recon_serve.model.factory import DEFAULT_CHECKPOINT, create_model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mesh", type=Path)
    ap.add_argument("--up", default="z", choices=("y", "z"), help="the mesh's up axis")
    ap.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    ap.add_argument("--points", type=int, default=2048)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, ckpt = create_model(args.checkpoint)
    prepared = prepare(decode_upload(args.mesh.name, args.mesh.read_bytes()), n_points=args.points, up_axis=args.up)
    with torch.no_grad():
        out = model(torch.from_numpy(prepared.points[None]))
    labels, category = restrict_to_category(out["part_logits"][0], ckpt["category_parts"])
    parts = ckpt["category_parts"][category]
    local = np.searchsorted(parts, labels)  # global part id -> index within the category
    names = [ckpt["part_names"][p].split("/", 1)[1] for p in parts]
    top = out["logits"][0].softmax(-1).topk(3)
    cls = ", ".join(f"{ckpt['class_names'][i]} {p:.2f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
    fig = plt.figure(figsize=(5, 5))
    ax = fig.add_subplot(111, projection="3d")
    scatter_parts(ax, prepared.points, local, names, f"{args.mesh.name}: parts of '{category}'\nModelNet10: {cls}", point_size=3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"{args.out}: category {category}; parts {dict(zip(names, np.bincount(local, minlength=len(names)).tolist()))}; {cls}")


if __name__ == "__main__":
    main()
