"""Exported ReCon vs torch eager on CPU: model throughput per runtime, FPS/kNN op times, FLOP efficiency.

One run measures three things, all with the same thread count (--threads, default 2):

1. Model throughput, `points` [B, 1024, 3] random-normal (fixed seed), B = 1 and 16, for
     torch eager    model(points), eval mode, fp32, torch.no_grad(), torch.set_num_threads(T)
     ORT custom_op  export_onnx(mode="custom_op"): FPS/kNN as recon_serve:: C++ kernels
     ORT pure       export_onnx(mode="pure"): FPS as one ONNX Scan, kNN as TopK
     Triton         the recon_python model (python backend, ORT with T intra-op threads, the repository's
                    shipped config incl. dynamic batching with max_queue_delay 2 ms), served by the
                    tritonserver bundled in nvidia-pytriton and called with tritonclient over HTTP
                    (binary tensors), one request at a time; so it includes HTTP and queueing costs.
   Every runner gets WARMUP untimed calls, then --repeats rounds in which each runner is called once
   (round-robin, start rotated per round), so machine noise hits all runtimes alike. Reported: median
   and p90 ms per batch, shapes/s (= B / median s), ORT/eager ratios (goals: >= 1.3x at B=1, >= 2x at
   B=16) and custom_op/pure.
2. FPS (64 centres) and kNN (k=32, queries = the 64 FPS centres) alone, B = 16, N = 1,024 and 8,192:
   the torch reference (recon_serve.geometry.group), the custom-op kernels (a one-node ONNX graph in
   ORT) and the pure-ONNX graph (Scan FPS / TopK kNN in ORT); ms per shape = batch ms / 16, and the
   custom/pure ratio (goal >= 3x). The three must return the same indices; the table says so.
   Note: the C++ kernels split the batch over std::thread::hardware_concurrency() threads, not T.
3. FLOPs per shape, counted as bench_encoder.count_flops does (Linear layers + attention matmuls, at
   1,024 points), the machine's fp32 matmul rate measured in this run (torch.matmul 1024x1024 for ~1 s
   at T threads, GFLOP/s), and each runtime's effective rate at B=16 (FLOPs x shapes/s) as % of it.

Model: --checkpoint, else models/default/recon_default.pt when it exists, else the `tiny` config with
random weights (seed 0, 10 classes); the output says which. Triton is skipped, with the reason
printed, when tritonclient, the server's venv (triton_python_env()) or the server itself is missing.

Run:  python bench/bench_export.py [--checkpoint PATH] [--repeats 20] [--threads 2] [--no-triton]
                                   [--json bench/results/export.json]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encoder import count_flops, cpu_model  # noqa: E402  (same FLOP counter as the encoder benchmark)

from recon_serve.export.onnx import export_onnx, ort_session  # noqa: E402
from recon_serve.geometry.group import farthest_point_sample, farthest_point_sample_scan, gather_points, knn  # noqa: E402
from recon_serve.model.checkpoint import save_checkpoint  # noqa: E402
from recon_serve.model.factory import DEFAULT_CHECKPOINT, create_model  # noqa: E402
from recon_serve.ops import custom_ops_library  # noqa: E402

NUM_POINTS = 1024
BATCHES = (1, 16)
OP_POINTS = (1024, 8192)
OP_BATCH, OP_CENTRES, OP_K = 16, 64, 32
WARMUP = 3
GOALS = {"ort_vs_eager_b1": 1.3, "ort_vs_eager_b16": 2.0, "op_custom_vs_pure": 3.0}


# ---- timing -------------------------------------------------------------------------------------
def write_result(path, result: dict, machine: dict) -> None:
    """Write a benchmark's JSON and say where, with the load seen during the run."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out} ({machine['cpu']}, load average {machine['loadavg_start'][0]} -> {machine['loadavg_end'][0]})")


def round_robin(runners: dict, repeats: int, warmup: int = WARMUP) -> dict:
    """{key: fn} -> {key: [seconds per call]}: `warmup` calls each, then `repeats` rounds calling every
    fn once, starting each round at the next fn so machine noise hits all of them alike."""
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    keys = list(runners)
    times = {k: [] for k in keys}
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t0 = time.perf_counter()
            runners[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def stats(seconds: list[float], batch: int) -> dict:
    t = np.array(seconds)
    med = float(np.median(t))
    return {"median_ms": med * 1e3, "p90_ms": float(np.percentile(t, 90)) * 1e3, "shapes_per_s": batch / med}


def matmul_gflops(seconds: float = 1.0, n: int = 1024) -> float:
    """fp32 torch.matmul rate of this machine at torch's current thread count."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    for _ in range(3):
        torch.matmul(a, b)
    calls, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        torch.matmul(a, b)
        calls += 1
    return 2 * n ** 3 * calls / elapsed / 1e9


# ---- model and runtimes -------------------------------------------------------------------------
def load_model(checkpoint: str | None, tmp: Path) -> tuple[nn.Module, Path, str]:
    """(model in eval mode, a checkpoint file for it (Triton needs one), a line saying which model)."""
    if checkpoint or DEFAULT_CHECKPOINT.is_file():
        path = Path(checkpoint or DEFAULT_CHECKPOINT)
        model, _ = create_model(path)
        return model.eval(), path, f"checkpoint {path} (config {model.cfg.name})"
    torch.manual_seed(0)
    model, _ = create_model("tiny", num_classes=10)
    path = tmp / "tiny_random.pt"
    save_checkpoint(path, model.eval())
    return model, path, f"tiny config, random weights, 10 classes ({DEFAULT_CHECKPOINT} not found)"


def start_triton(checkpoint: Path, threads: int, tmp: Path, stack: contextlib.ExitStack):
    """(call(x) -> outputs, info) for the recon_python model on the bundled server; raises with the reason if it can't."""
    import tritonclient.http as http

    from recon_serve.export.triton_repo import PYTHON_MODEL, write_model_repository
    from recon_serve.export.triton_server import TritonServer, triton_python_env

    env = triton_python_env()  # cached venv; created (pip) on first use
    summary = write_model_repository(checkpoint, tmp / "triton_repo", python_site_packages=str(env.site_packages),
                                     threads=threads)
    server = stack.enter_context(TritonServer(summary["out_dir"], models=[PYTHON_MODEL], env=env))
    client = http.InferenceServerClient(server.http_url)
    outputs = list(summary["outputs"])

    def call(x: np.ndarray):
        inp = http.InferInput("points", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = client.infer(PYTHON_MODEL, [inp], outputs=[http.InferRequestedOutput(n, binary_data=True) for n in outputs])
        return [result.as_numpy(n) for n in outputs]

    info = {"model": PYTHON_MODEL, "graph_mode": summary["mode"], "server_start_s": round(server.start_seconds, 1),
            "transport": "HTTP, binary tensors, one request at a time",
            "config": (Path(summary["out_dir"]) / PYTHON_MODEL / "config.pbtxt").read_text()}
    return call, info


def bench_model(model, checkpoint: Path, args, tmp: Path, stack: contextlib.ExitStack) -> dict:
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(b, NUM_POINTS, 3, generator=gen) for b in BATCHES}
    skipped, sessions = {}, {}
    modes = ["custom_op", "pure"] if custom_ops_library() is not None else ["pure"]
    if "custom_op" not in modes:
        skipped["ort_custom_op"] = "custom-op kernel library could not be built (see the logged reason)"
    for mode in modes:
        t0 = time.perf_counter()
        sessions[mode] = ort_session(export_onnx(model, tmp / f"model_{mode}.onnx", mode=mode), threads=args.threads)
        print(f"exported ONNX ({mode}) in {time.perf_counter() - t0:.0f} s", flush=True)

    triton, triton_info = None, {}
    if args.no_triton:
        skipped["triton"] = "--no-triton"
    else:
        t0 = time.perf_counter()
        try:
            triton, triton_info = start_triton(checkpoint, args.threads, tmp, stack)
            print(f"Triton repository written and server ready in {time.perf_counter() - t0:.0f} s", flush=True)
        except Exception as e:  # noqa: BLE001  (any failure: report it and go on without Triton)
            skipped["triton"] = f"{type(e).__name__}: {str(e).strip()[:600]}"
            print(f"Triton skipped: {skipped['triton']}", flush=True)

    runners = {}
    for b, x in inputs.items():
        xn = x.numpy()
        runners["torch_eager", b] = lambda x=x: model(x)
        for mode, sess in sessions.items():
            runners[f"ort_{mode}", b] = lambda s=sess, xn=xn: s.run(None, {"points": xn})
        if triton:
            runners["triton", b] = lambda xn=xn: triton(xn)

    # Same answers? (max |ORT - eager| over all outputs, at B=16)
    x16 = inputs[max(BATCHES)]
    with torch.no_grad():
        ref = [v.numpy() for v in model(x16).values()]
    max_diff = {}
    for name, fn in [(f"ort_{m}", lambda s=s: s.run(None, {"points": x16.numpy()})) for m, s in sessions.items()] + \
                    ([("triton", lambda: triton(x16.numpy()))] if triton else []):
        max_diff[name] = max(float(np.abs(o - r).max()) for o, r in zip(fn(), ref))

    print(f"timing the model: {len(runners)} runners x {args.repeats} rounds ...", flush=True)
    with torch.no_grad():
        times = round_robin(runners, args.repeats)
    rows = [{"runtime": rt, "batch": b, "num_points": NUM_POINTS, **stats(t, b)} for (rt, b), t in times.items()]
    return {"rows": rows, "skipped": skipped, "max_abs_diff_vs_eager": max_diff, "triton": triton_info}


# ---- FPS / kNN alone ----------------------------------------------------------------------------
class _Fps(nn.Module):
    def __init__(self, npoint: int, custom: bool):
        super().__init__()
        self.npoint, self.custom = npoint, custom

    def forward(self, points):
        if self.custom:
            return torch.ops.recon_serve.farthest_point_sample(points, self.npoint)
        return farthest_point_sample_scan(points, self.npoint)


class _Knn(nn.Module):
    def __init__(self, k: int, custom: bool):
        super().__init__()
        self.k, self.custom = k, custom

    def forward(self, points, query):
        if self.custom:
            return torch.ops.recon_serve.knn(points, query, self.k)
        return knn(self.k, points, query)


def export_op(module: nn.Module, example: tuple, path: Path, custom: bool) -> Path:
    """One op as ONNX (batch and N dynamic), exported the way export_onnx exports it inside the model."""
    from recon_serve.ops.onnx_ops import translation_table  # also registers torch.ops.recon_serve

    batch = torch.export.Dim("batch", min=1, max=1024)
    npts = torch.export.Dim("num_points", min=OP_CENTRES, max=65536)
    names = ["points", "query"][:len(example)]
    shapes = {"points": {0: batch, 1: npts}, "query": {0: batch}}
    with torch.no_grad():
        torch.onnx.export(module.eval(), example, str(path), dynamo=True, opset_version=20, input_names=names,
                          output_names=["indices"], dynamic_shapes={n: shapes[n] for n in names},
                          custom_translation_table=translation_table() if custom else None,
                          external_data=False, optimize=False, verbose=False)
    return path


def bench_ops(args, tmp: Path) -> dict:
    import recon_serve.ops.torch_ops  # noqa: F401  (torch.ops.recon_serve, for the custom-op export)

    impls = ["custom_op", "pure"] if custom_ops_library() is not None else ["pure"]
    gen = torch.Generator().manual_seed(0)
    ex_points, ex_query = torch.rand(2, 256, 3, generator=gen), torch.rand(2, OP_CENTRES, 3, generator=gen)
    sessions = {}
    for impl in impls:
        custom = impl == "custom_op"
        sessions["fps", impl] = ort_session(export_op(_Fps(OP_CENTRES, custom), (ex_points,), tmp / f"fps_{impl}.onnx", custom), args.threads)
        sessions["knn", impl] = ort_session(export_op(_Knn(OP_K, custom), (ex_points, ex_query), tmp / f"knn_{impl}.onnx", custom), args.threads)

    runners, same = {}, {}
    for n in OP_POINTS:
        xyz = torch.randn(OP_BATCH, n, 3, generator=gen)
        ref_idx = farthest_point_sample(xyz, OP_CENTRES)
        centres = gather_points(xyz, ref_idx)
        ref_knn = knn(OP_K, xyz, centres)
        feeds = {"fps": {"points": xyz.numpy()}, "knn": {"points": xyz.numpy(), "query": centres.numpy()}}
        runners["fps", n, "torch_ref"] = lambda xyz=xyz: farthest_point_sample(xyz, OP_CENTRES)
        runners["knn", n, "torch_ref"] = lambda xyz=xyz, c=centres: knn(OP_K, xyz, c)
        for (op, impl), sess in sessions.items():
            runners[op, n, impl] = lambda s=sess, f=feeds[op]: s.run(None, f)
            got = sess.run(None, feeds[op])[0]
            same[f"{op}_{n}_{impl}"] = bool(np.array_equal(got, (ref_idx if op == "fps" else ref_knn).numpy()))

    print(f"timing FPS/kNN: {len(runners)} runners x {args.repeats} rounds ...", flush=True)
    with torch.no_grad():
        times = round_robin(runners, args.repeats)
    rows = []
    for (op, n, impl), t in times.items():
        s = stats(t, OP_BATCH)
        rows.append({"op": op, "num_points": n, "impl": impl, "batch": OP_BATCH, "median_ms": s["median_ms"],
                     "p90_ms": s["p90_ms"], "ms_per_shape": s["median_ms"] / OP_BATCH,
                     "same_indices_as_torch": same.get(f"{op}_{n}_{impl}", True)})
    return {"rows": rows, "centres": OP_CENTRES, "k": OP_K,
            "skipped": {} if "custom_op" in impls else {"custom_op": "custom-op kernel library could not be built"}}


# ---- report -------------------------------------------------------------------------------------
def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def verdict(r: float | None, goal: float) -> str:
    return "n/a" if r is None else f"{r:.2f}x (goal >= {goal:g}x: {'met' if r >= goal else 'NOT met'})"


def report(model_res: dict, op_res: dict, flops: int, mm_gflops: float) -> dict:
    print(f"\n1. Model throughput, {NUM_POINTS} points per shape")
    head = f"{'runtime':<15} {'batch':>5} {'median ms':>10} {'p90 ms':>9} {'shapes/s':>9}"
    print(head, "-" * len(head), sep="\n")
    sps = {}
    for row in sorted(model_res["rows"], key=lambda r: (r["batch"], r["runtime"] != "torch_eager", r["runtime"])):
        sps[row["runtime"], row["batch"]] = row["shapes_per_s"]
        print(f"{row['runtime']:<15} {row['batch']:>5} {row['median_ms']:>10.1f} {row['p90_ms']:>9.1f} {row['shapes_per_s']:>9.1f}")
    for name, why in model_res["skipped"].items():
        print(f"{name:<15} skipped: {why}")
    for name, d in model_res["max_abs_diff_vs_eager"].items():
        print(f"max |{name} - eager| over outputs at batch {max(BATCHES)}: {d:.2e}")

    ratios = {}
    for mode in ("custom_op", "pure"):
        for b in BATCHES:
            ratios[f"ort_{mode}_vs_eager_b{b}"] = ratio(sps.get((f"ort_{mode}", b)), sps.get(("torch_eager", b)))
        print(f"ORT {mode:<9} / eager:  " + ",  ".join(
            f"batch {b} {verdict(ratios[f'ort_{mode}_vs_eager_b{b}'], GOALS[f'ort_vs_eager_b{b}'])}" for b in BATCHES))
    for b in BATCHES:
        ratios[f"ort_custom_op_vs_pure_b{b}"] = ratio(sps.get(("ort_custom_op", b)), sps.get(("ort_pure", b)))
    print("ORT custom_op / pure:  " + ",  ".join(
        f"batch {b} {ratios[f'ort_custom_op_vs_pure_b{b}'] or float('nan'):.2f}x" for b in BATCHES))
    if ("triton", BATCHES[0]) in sps:
        mode = model_res["triton"]["graph_mode"]
        for b in BATCHES:
            ratios[f"triton_vs_ort_b{b}"] = ratio(sps.get(("triton", b)), sps.get((f"ort_{mode}", b)))
        print(f"Triton / ORT {mode} (same graph, in-process):  " + ",  ".join(
            f"batch {b} {ratios[f'triton_vs_ort_b{b}'] or float('nan'):.2f}x" for b in BATCHES))

    print(f"\n2. FPS ({op_res['centres']} centres) and kNN (k={op_res['k']}) alone, batch {OP_BATCH}")
    head = f"{'op':<4} {'points':>6} {'impl':<10} {'median ms':>10} {'p90 ms':>9} {'ms/shape':>9}  same indices as torch"
    print(head, "-" * len(head), sep="\n")
    ms = {}
    for row in op_res["rows"]:
        ms[row["op"], row["num_points"], row["impl"]] = row["ms_per_shape"]
        print(f"{row['op']:<4} {row['num_points']:>6} {row['impl']:<10} {row['median_ms']:>10.2f} {row['p90_ms']:>9.2f} "
              f"{row['ms_per_shape']:>9.3f}  {'yes' if row['same_indices_as_torch'] else 'NO'}")
    for name, why in op_res["skipped"].items():
        print(f"{name} skipped: {why}")
    for op in ("fps", "knn"):
        for n in OP_POINTS:
            ratios[f"{op}_{n}_custom_vs_pure"] = ratio(ms.get((op, n, "pure")), ms.get((op, n, "custom_op")))
            ratios[f"{op}_{n}_custom_vs_torch"] = ratio(ms.get((op, n, "torch_ref")), ms.get((op, n, "custom_op")))
            print(f"{op} {n:>5}: custom / pure {verdict(ratios[f'{op}_{n}_custom_vs_pure'], GOALS['op_custom_vs_pure'])}; "
                  f"custom / torch {ratios[f'{op}_{n}_custom_vs_torch'] or float('nan'):.2f}x")

    b = max(BATCHES)
    print(f"\n3. FLOP efficiency at batch {b}")
    print(f"model: {flops / 1e9:.3f} GFLOP per shape (Linear + attention matmuls, as bench_encoder counts them)")
    print(f"machine: torch.matmul 1024x1024 fp32 = {mm_gflops:.1f} GFLOP/s")
    efficiency = {}
    for rt in ("torch_eager", "ort_custom_op", "ort_pure", "triton"):
        if (rt, b) in sps:
            eff = flops * sps[rt, b] / 1e9
            efficiency[rt] = {"gflops": eff, "percent_of_matmul": 100 * eff / mm_gflops}
            print(f"{rt:<15} {eff:>7.1f} GFLOP/s = {100 * eff / mm_gflops:5.1f}% of matmul")
    return {"ratios": ratios, "efficiency_b16": efficiency}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help=f"default: {DEFAULT_CHECKPOINT} if it exists, else tiny config")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads")
    ap.add_argument("--no-triton", action="store_true", help="skip the Triton runtime")
    ap.add_argument("--json", default="bench/results/export.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    # The dynamo exporter's chatter (missing torchvision, deprecations, axis renames) says nothing about speed.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="# The axis name")
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmpdir, contextlib.ExitStack() as stack:
        tmp = Path(tmpdir)
        model, checkpoint, described = load_model(args.checkpoint, tmp)
        params = sum(p.numel() for p in model.parameters())
        print(f"model: {described}, {params / 1e6:.2f}M params; {args.threads} threads; {args.repeats} repeats", flush=True)
        flops = count_flops(model, torch.randn(1, NUM_POINTS, 3, generator=torch.Generator().manual_seed(0)))
        mm_gflops = matmul_gflops()
        model_res = bench_model(model, checkpoint, args, tmp, stack)
        op_res = bench_ops(args, tmp)
    summary = report(model_res, op_res, flops, mm_gflops)

    import onnxruntime

    machine = dict(cpu=cpu_model(), cpu_count=os.cpu_count(), threads=args.threads, torch=torch.__version__,
                   onnxruntime=onnxruntime.__version__, python=platform.python_version(),
                   loadavg_start=[round(x, 2) for x in load_start], loadavg_end=[round(x, 2) for x in os.getloadavg()],
                   date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    result = {"machine": machine, "model": {"source": described, "config": model.cfg.to_dict(), "params": params,
                                            "gflops_per_shape": flops / 1e9},
              "repeats": args.repeats, "warmup": WARMUP, "goals": GOALS, "matmul_gflops": mm_gflops,
              "model_throughput": model_res, "ops": op_res, **summary}
    write_result(args.json, result, machine)


if __name__ == "__main__":
    main()
