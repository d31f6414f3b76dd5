"""One GPU run of the CUDA path: build the extension, check parity, time it; one JSON into OUT_DIR.

    python bench/gpu_check.py OUT_DIR          (bench/gpu_check.sh adds the pytest gpu tests)

Needs only torch + numpy (no pytest, fastapi or onnxruntime): it imports recon_serve's model, geometry,
ops and torch backend alone, and runs the parity checks itself (recon_serve.ops.cuda_parity). Timed:
FPS (64 and 512 centres) and kNN (k=32, 512 queries) alone at 1k/8k/16k points, batch 16, CUDA
kernels against the torch loop on the same GPU; and TorchBackend on the shipped checkpoint at batch
1/16/128 (fp32 with and without the kernels, bf16 with them): shapes/s and p50 ms per batch.
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recon_serve.geometry import group as ref  # noqa: E402
from recon_serve.ops import cuda_ops, cuda_parity  # noqa: E402

POINTS = (1024, 8192, 16384)
CLOUDS = 16  # clouds per FPS/kNN call
BATCHES = (1, 16, 128)


def _gpu_ms(fn, reps: int, warmup: int = 2) -> list[float]:
    """Milliseconds per call, from CUDA events around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return times


def _summary(times: list[float]) -> dict:
    return {"p50_ms": round(statistics.median(times), 4), "min_ms": round(min(times), 4), "reps": len(times)}


def parity() -> list[dict]:
    checks = [cuda_parity.check_fps(n, p, skip_origin=s, force_global=g)
              for n, p in ((1024, 64), (1024, 512), (8192, 512), (16384, 512))
              for s in (False, True) for g in (False, True)]
    checks += [cuda_parity.check_knn(n, 512, k, duplicates=d) for n in POINTS for k in (32, 64) for d in (0.0, 0.05)]
    return checks


def time_ops() -> list[dict]:
    rows = []
    for n in POINTS:
        x = cuda_parity.cloud(CLOUDS, n, seed=n).cuda()
        reps = 5 if n > 8192 else 10
        for npoint in (64, 512):
            kernel = _summary(_gpu_ms(lambda x=x, p=npoint: cuda_ops.farthest_point_sample(x, p), 20))
            loop = _summary(_gpu_ms(lambda x=x, p=npoint: ref.farthest_point_sample(x, p), reps))
            rows.append({"op": "fps", "N": n, "npoint": npoint, "clouds": CLOUDS, "cuda": kernel, "torch": loop,
                         "speedup": round(loop["p50_ms"] / kernel["p50_ms"], 1)})
        q = ref.gather_points(x, cuda_ops.farthest_point_sample(x, 512))
        kernel = _summary(_gpu_ms(lambda x=x, q=q: cuda_ops.knn(32, x, q), 20))
        topk = _summary(_gpu_ms(lambda x=x, q=q: ref.knn(32, x, q), reps))
        rows.append({"op": "knn", "N": n, "k": 32, "queries": 512, "clouds": CLOUDS, "cuda": kernel, "torch": topk,
                     "speedup": round(topk["p50_ms"] / kernel["p50_ms"], 1)})
        print(json.dumps(rows[-3:]), flush=True)
    return rows


def time_backend(checkpoint) -> list[dict]:
    from recon_serve.backends.torch_backend import TorchBackend

    rows = []
    for label, bf16, kernels in (("fp32", False, True), ("fp32, torch FPS/kNN", False, False), ("bf16", True, True)):
        cuda_ops.set_enabled(kernels)
        backend = TorchBackend(checkpoint, device="cuda", bf16=bf16)
        n = backend.model.cfg.num_points
        for b in BATCHES:
            x = cuda_parity.cloud(b, n, seed=b, near_origin=0.0).numpy()
            for _ in range(3):
                backend.infer(x)
            times = []
            for _ in range(10 if b == 128 else 20):
                t0 = time.perf_counter()
                backend.infer(x)  # host -> device -> host, as the server does
                times.append((time.perf_counter() - t0) * 1e3)
            p50 = statistics.median(times)
            rows.append({"backend": label, "batch": b, "points": n, "p50_ms": round(p50, 3),
                         "shapes_per_s": round(b / p50 * 1e3, 1)})
            print(json.dumps(rows[-1]), flush=True)
        del backend
        torch.cuda.empty_cache()
    cuda_ops.set_enabled(True)
    return rows


def main(out_dir: str) -> int:
    from recon_serve.model.factory import DEFAULT_CHECKPOINT

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}}
    if not torch.cuda.is_available():
        result["error"] = "no CUDA device"
    else:
        t0 = time.perf_counter()
        ok = cuda_ops.extension() is not None
        result["build"] = {"ok": ok, "seconds": round(time.perf_counter() - t0, 1), "error": cuda_ops.load_error()}
        print(json.dumps(result), flush=True)
        if ok:
            result["parity"] = parity()
            result["backend_parity"] = [cuda_parity.check_backend(DEFAULT_CHECKPOINT, batch=4, bf16=b) for b in (False, True)]
            result["parity_ok"] = all(c["ok"] for c in result["parity"] + result["backend_parity"])
            result["knn_identical"] = all(c["identical"] for c in result["parity"] if c.get("duplicates") == 0.0
                                          and "k" in c)
            print(json.dumps({k: result[k] for k in ("parity_ok", "knn_identical", "backend_parity")}), flush=True)
            result["ops"] = time_ops()
            result["backend"] = time_backend(DEFAULT_CHECKPOINT)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result.get("parity_ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
