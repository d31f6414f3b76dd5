"""Run an exported recon-serve model in your own ONNX Runtime session, no recon-serve runtime needed
beyond the custom-op library file.

    python clients/examples/own_ort_session.py model_repository/recon_python/1/model.onnx \
        ../shared/data/meshes/chair_model.obj --up y

The library (`libpoint_ops*.so`) sits next to model.onnx in the exported version directory; with a
pure-ONNX export no library is needed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from recon_serve.geometry.decode import decode_upload
from recon_serve.geometry.preprocess import prepare


def open_session(model_path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    libs = sorted(model_path.parent.glob("libpoint_ops*.so"))
    if libs:  # the FarthestPointSample / KNN kernels of the recon_serve domain
        so.register_custom_ops_library(str(libs[0]))
    return ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("mesh", type=Path)
    ap.add_argument("--up", default="z", choices=("y", "z"), help="the mesh's up axis")
    args = ap.parse_args()
    sess = open_session(args.model)
    shape = decode_upload(args.mesh.name, args.mesh.read_bytes())
    points = prepare(shape, n_points=1024, up_axis=args.up).points[None].astype(np.float32)
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, {"points": points})))
    card = json.loads((args.model.parent / "model_card.json").read_text()) if (args.model.parent / "model_card.json").exists() else {}
    classes = card.get("class_names") or []
    if "logits" in out and classes:
        p = np.exp(out["logits"][0] - out["logits"][0].max()); p /= p.sum()
        for i in np.argsort(-p)[:3]:
            print(f"{classes[i]:<12} {p[i]:.3f}")
    print("embedding", out["embedding"].shape, f"norm {float(np.linalg.norm(out['embedding'][0])):.4f}")


if __name__ == "__main__":
    main()
