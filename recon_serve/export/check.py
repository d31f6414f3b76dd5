"""Check an exported model repository against its checkpoint: torch eager vs ORT custom-op vs ORT pure,
and vs the TensorRT plan (recon_trt) where one was built and the tensorrt module and a GPU are here.

Outputs are compared as floats (max abs diff); FPS/kNN indices are compared exactly, from the grouping ops
exported alone, because a one-index slip changes a patch yet can hide inside a small float difference.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recon_serve.export.triton_repo import ONNX_MODEL, PLAN_FILE, PYTHON_MODEL, TRT_LIBRARY_NAME, TRT_MODEL, latest_version


def sample_clouds(num_points: int, count: int = 4, data=None) -> tuple[np.ndarray, str]:
    """A fixed input [count, num_points, 3]: evenly spaced ModelNet10 test clouds when the data is there, else seeded noise."""
    from recon_serve.geometry.normalise import normalise

    rng = np.random.default_rng(0)
    try:
        from recon_serve.data.modelnet import load_modelnet10

        points, _, _, ids = load_modelnet10("test", data)
        picks = np.linspace(0, len(points) - 1, count).astype(int)
        clouds = [normalise(points[i][rng.choice(points.shape[1], num_points, replace=False)]) for i in picks]
        return np.stack(clouds).astype(np.float32), "modelnet10/test " + ", ".join(ids[i] for i in picks)
    except (FileNotFoundError, ValueError):
        clouds = [normalise(rng.uniform(-1, 1, (num_points, 3))) for _ in range(count)]
        return np.stack(clouds).astype(np.float32), f"{count} seeded uniform clouds (ModelNet10 not found)"


def _timed(fn, repeats: int = 3):
    """(result, median ms) after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, 1000 * float(np.median(times))


def _output_diffs(session, x: np.ndarray, reference: dict) -> dict:
    out, ms = _timed(lambda: session.run(None, {"points": x}))
    names = [o.name for o in session.get_outputs()]
    diffs = {n: float(np.abs(o - reference[n]).max()) for n, o in zip(names, out)}
    return {"max_abs_diff": max(diffs.values()), "per_output": diffs, "ms_per_batch": round(ms, 2)}


def _index_check(path: Path, x: np.ndarray, ref_centres: np.ndarray, ref_patches: np.ndarray) -> dict:
    from recon_serve.export.onnx import ort_session

    centres, patches = ort_session(path, threads=2).run(None, {"points": x})
    return {"fps_equal": bool(np.array_equal(centres, ref_centres)), "knn_equal": bool(np.array_equal(patches, ref_patches)),
            "fps_mismatches": int((centres != ref_centres).sum()), "knn_mismatches": int((patches != ref_patches).sum())}


def _plan_check(repo_dir: Path, version: str, x: np.ndarray, reference: dict) -> dict:
    """The plan's outputs against torch (its own figure: a plan may run bf16 kernels), or why not."""
    from recon_serve.export.tensorrt.build import run_plan, tensorrt_available

    d = repo_dir / TRT_MODEL / version
    if not (d / PLAN_FILE).is_file():
        return {"skipped": f"no {TRT_MODEL}/{version}/{PLAN_FILE} (built by `recon-serve export` where TensorRT and a GPU are)"}
    why = tensorrt_available()
    if why:
        return {"skipped": why}
    out, ms = _timed(lambda: run_plan(d / PLAN_FILE, d / TRT_LIBRARY_NAME, x))
    diffs = {n: float(np.abs(o - reference[n]).max()) for n, o in out.items() if n in reference}
    return {"max_abs_diff": max(diffs.values()), "per_output": diffs, "ms_per_batch": round(ms, 2)}


def check_export(repo_dir: str | Path, checkpoint=None, data=None) -> dict:
    """Figures for the newest version in repo_dir (see module doc); `max_abs_diff` and `indices_equal` sum it up."""
    from recon_serve.export.onnx import export_grouping_onnx, export_onnx, ort_session
    from recon_serve.geometry.group import grouping_indices
    from recon_serve.model.factory import create_model
    from recon_serve.ops import custom_ops_library

    repo_dir = Path(repo_dir)
    model_dir = repo_dir / PYTHON_MODEL if (repo_dir / PYTHON_MODEL).is_dir() else repo_dir / ONNX_MODEL
    version_dir = latest_version(model_dir)
    card = json.loads((version_dir / "model_card.json").read_text())
    ckpt_path = Path(checkpoint or card["source_checkpoint"]["path"])
    model, _ = create_model(ckpt_path)
    cfg = model.cfg
    x, described = sample_clouds(cfg.num_points, data=data)
    with torch.no_grad():
        ref, eager_ms = _timed(lambda: {k: v.numpy() for k, v in model(torch.from_numpy(x)).items()})
        ref_centres, ref_patches = (t.numpy() for t in grouping_indices(
            torch.from_numpy(x), cfg.num_group, cfg.group_size, cfg.fps_skip_origin))
    shipped = card["onnx"]["mode"]
    result = {
        "repository": str(repo_dir), "version_dir": str(version_dir), "checkpoint": str(ckpt_path),
        "checkpoint_matches_card": hashlib.sha256(ckpt_path.read_bytes()).hexdigest() == card["source_checkpoint"]["sha256"],
        "input": {"description": described, "shape": list(x.shape)},
        "shipped_mode": shipped, "runtimes": {"torch_eager": {"ms_per_batch": round(eager_ms, 2)}}, "indices": {},
    }
    modes = ["custom_op", "pure"] if custom_ops_library() is not None else ["pure"]
    if "custom_op" not in modes:
        result["runtimes"]["ort_custom_op"] = {"skipped": "custom-op library unavailable"}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            path = version_dir / "model.onnx" if mode == shipped else export_onnx(model, Path(tmp) / f"{mode}.onnx", mode=mode)
            result["runtimes"][f"ort_{mode}"] = {"graph": "repository" if mode == shipped else "re-exported from checkpoint",
                                                 **_output_diffs(ort_session(path, threads=2), x, ref)}
            grouping = export_grouping_onnx(cfg.num_group, cfg.group_size, Path(tmp) / f"group_{mode}.onnx", mode=mode)
            result["indices"][mode] = _index_check(grouping, x, ref_centres, ref_patches)
    result["runtimes"]["tensorrt"] = _plan_check(repo_dir, version_dir.name, x, ref)
    ort_runs = [r for k, r in result["runtimes"].items() if k.startswith("ort_") and "max_abs_diff" in r]
    result["max_abs_diff"] = max(r["max_abs_diff"] for r in ort_runs)
    result["indices_equal"] = all(c["fps_equal"] and c["knn_equal"] for c in result["indices"].values())
    result["runtimes_compared"] = [k for k, r in result["runtimes"].items() if k.startswith("ort_") and "skipped" not in r]
    return result
