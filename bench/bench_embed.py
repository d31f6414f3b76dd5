"""Batch embedding throughput (`recon-serve embed`): files/s with 1 worker and with all cores.

The library: --files (default 2,000) files in seven formats, written once into --library (default a
temp folder) from the shared data, deterministic by seed:
    .pcd  ModelNet10 test clouds (copied)          .npy  ModelNet10 test clouds as float32 arrays
    .obj .stl .ply .off .glb  real meshes from meshes/ (chair_model, teapot, bunny, fandisk, ...)
                              each randomly rotated and scaled, exported with trimesh
plus every 100th file truncated (most then fail to read), as a real CAD library has. Each run embeds the whole
library into a fresh index with the shipped model (ONNX exported once beforehand, not timed) and
reports embed_seconds (worker start-up included) and files/s. Goal: all cores >= 1.8x one worker
on 2 cores. Other load on the machine skews this: the JSON records the load average.

Run:  python bench/bench_embed.py [--files 2000] [--workers 1 2] [--library DIR] [--json bench/results/embed.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encoder import cpu_model  # noqa: E402
from bench_export import write_result  # noqa: E402

MESHES = ["chair_model.obj", "teapot.stl", "bunny.ply", "fandisk.obj", "ballA.off", "quadknot.obj",
          "angle_block.STL", "idler_riser.STL", "torus.STL"]
MESH_FORMATS = ["obj", "stl", "ply", "off", "glb"]


def make_library(out: Path, n: int, data: Path, seed: int = 0) -> dict:
    """Write n files (mixed formats, 1% broken) under out/<format>/; returns counts per format."""
    import trimesh

    rng = np.random.default_rng(seed)
    clouds = sorted((data / "modelnet10").glob("*/test/*.pcd"))
    from recon_serve.data.readers import read_trimesh

    meshes = []
    for m in MESHES:  # our reader: no texture loading (that would need Pillow)
        v, f = read_trimesh((data / "meshes" / m).read_bytes(), Path(m).suffix.lower().lstrip("."))
        meshes.append(trimesh.Trimesh(v, f, process=False))
    kinds = ["pcd", "npy"] + MESH_FORMATS
    counts: dict[str, int] = {}
    for i in range(n):
        kind = kinds[i % len(kinds)]
        d = out / kind
        d.mkdir(parents=True, exist_ok=True)
        broken = i % 100 == 99
        if kind == "pcd":
            path = d / f"{i:05d}.pcd"
            path.write_bytes(clouds[rng.integers(len(clouds))].read_bytes())
        elif kind == "npy":
            from recon_serve.data.readers import read_pcd

            path = d / f"{i:05d}.npy"
            np.save(path, read_pcd(clouds[rng.integers(len(clouds))]).astype(np.float32))
        else:
            mesh = meshes[rng.integers(len(meshes))].copy()
            q = rng.normal(size=4)
            mesh.apply_transform(trimesh.transformations.quaternion_matrix(q / np.linalg.norm(q)))
            mesh.apply_scale(float(rng.uniform(0.5, 20)))
            path = d / f"{i:05d}.{kind}"
            mesh.export(path, file_type=kind)
        if broken:
            path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 7)])
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def main(argv=None) -> int:
    from recon_serve.backends.ort_backend import OrtBackend
    from recon_serve.batch.embed import embed_library
    from recon_serve.model.factory import DEFAULT_CHECKPOINT
    from recon_serve.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    ap.add_argument("--library", type=Path, help="reuse or create the library here (default: a temp folder)")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("RECON_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "embed.json"))
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    lib = args.library or tmp / "library"
    load_start = os.getloadavg()
    try:
        if not (lib / ".complete").is_file():
            print(f"writing {args.files} files into {lib} ...")
            counts = make_library(lib, args.files, args.data)
            (lib / ".complete").write_text(json.dumps(counts))
        counts = json.loads((lib / ".complete").read_text())
        OrtBackend(DEFAULT_CHECKPOINT, Settings().cache_dir, threads=1).close()  # export before timing
        runs = {}
        for w in args.workers:
            r = embed_library(lib, tmp / f"index-{w}", workers=w, progress=True)
            runs[w] = {k: r[k] for k in ("files", "embedded", "failed", "embed_seconds", "files_per_second")}
            print(f"{w} worker(s): {r['files']} files ({r['failed']} broken) in {r['embed_seconds']:.1f} s = "
                  f"{r['files_per_second']:.1f} files/s")
        base = runs[args.workers[0]]["files_per_second"]
        speedup = {w: round(v["files_per_second"] / base, 2) for w, v in runs.items()}
        for w, s in speedup.items():
            print(f"  {w} worker(s): {s:.2f}x of {args.workers[0]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    machine = dict(cpu=cpu_model(), cpu_count=os.cpu_count(), python=platform.python_version(),
                   loadavg_start=[round(x, 2) for x in load_start], loadavg_end=[round(x, 2) for x in os.getloadavg()],
                   date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    write_result(args.json, {"machine": machine, "library": {"files": args.files, "per_format": counts,
                                                            "broken_fraction": 0.01},
                             "model": str(DEFAULT_CHECKPOINT.relative_to(ROOT)), "runs": runs,
                             "speedup_vs_first": speedup, "goal": ">= 1.8x with all cores on 2 cores"}, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
