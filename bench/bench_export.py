"""Exported ReCon vs torch eager on CPU: model throughput per runtime, FPS/kNN op times, FLOP efficiency.

One run measures three things, all with the same thread count (--threads, default 2):

1. Model throughput, `points` [B, 1024, 3] random-normal (fixed seed), B = 1 and 16, for
     eager_paper    the paper's model structure in torch (`paper_structure`): the mini-PointNet's second
                    MLP on the concatenated [pooled, point] features and the seg head on its concatenated
                    inputs, every BatchNorm applied as a layer, no patch chunking; all outputs
     torch eager    model(points) as recon_serve runs it (split first Linears, BN folded in eval mode,
                    chunked patch embedding), eval mode, fp32, torch.no_grad(), torch.set_num_threads(T)
     ORT reference  the export before issue 14, kept for comparison: the paper structure, BatchNorm not
                    folded, one graph with all outputs (custom ops)
     ORT custom_op  export_onnx(mode="custom_op"): all outputs (the parts graph /v1/segment and Triton run)
     ORT pure       export_onnx(mode="pure"): FPS as one ONNX Scan, kNN as TopK
     ORT global     global_graph(custom_op graph): no part head, what every other endpoint runs
     ORT global int8  quantize_int8(global graph), with --int8
     Triton         the recon_python model (python backend, ORT with T intra-op threads, the repository's
                    shipped config incl. dynamic batching with max_queue_delay 2 ms), served by the
                    tritonserver bundled in nvidia-pytriton and called with tritonclient over HTTP
                    (binary tensors), one request at a time; so it includes HTTP and queueing costs.
   Every runner gets WARMUP untimed calls, then --repeats rounds in which each runner is called once
   (round-robin, each round in a seeded random order), so machine noise hits all runtimes alike. Reported: median
   and p90 ms per batch, shapes/s (= B / median s), and the ratios issue 14 asks for: ORT global vs
   the reference export at B=16 (goal >= 1.5x), vs eager_paper at B=16 (>= 2x) and B=1 (>= 2.5x);
   also ORT global vs the all-outputs graph (the pruning alone), ORT vs our eager, custom_op/pure.
2. FPS (64 centres) and kNN (k=32, queries = the 64 FPS centres) alone, B = 16, N = 1,024 and 8,192:
   the torch reference (recon_serve.geometry.group), the custom-op kernels (a one-node ONNX graph in
   ORT) and the pure-ONNX graph (Scan FPS / TopK kNN in ORT); ms per shape = batch ms / 16, and the
   custom/pure ratio (goal >= 3x). The three must return the same indices; the table says so.
   Note: the C++ kernels split the batch over std::thread::hardware_concurrency() threads, not T.
3. FLOPs per shape, counted as bench_encoder.count_flops does (linear layers + attention matmuls, at
   1,024 points): before (the paper structure, all outputs), all outputs as we run them, and after
   (the global graph); the machine's fp32 matmul rate measured in this run (torch.matmul 1024x1024 for
   ~1 s at T threads, GFLOP/s), and each runtime's effective rate at B=16 (the FLOPs its graph runs x
   shapes/s) as % of it.

Model: --checkpoint, else models/default/recon_default.pt when it exists, else the `tiny` config with
random weights (seed 0, 10 classes); the output says which. Triton is skipped, with the reason
printed, when tritonclient, the server's venv (triton_python_env()) or the server itself is missing.

Run:  python bench/bench_export.py [--checkpoint PATH] [--repeats 20] [--threads 2] [--no-triton] [--int8]
                                   [--json bench/results/export.json]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import logging
import os
import platform
import random
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

from recon_serve.export.onnx import export_onnx, global_graph, ort_session, quantize_int8  # noqa: E402
from recon_serve.geometry.group import farthest_point_sample, farthest_point_sample_scan, gather_points, knn  # noqa: E402
from recon_serve.model.checkpoint import save_checkpoint  # noqa: E402
from recon_serve.model.factory import DEFAULT_CHECKPOINT, create_model  # noqa: E402
from recon_serve.model.recon import MiniPointNet  # noqa: E402
from recon_serve.model.seg import SegHead, interpolate  # noqa: E402
from recon_serve.ops import custom_ops_library  # noqa: E402

NUM_POINTS = 1024
BATCHES = (1, 16)
OP_POINTS = (1024, 8192)
OP_BATCH, OP_CENTRES, OP_K = 16, 64, 32
WARMUP = 3
GOALS = {"ort_global_vs_reference_b16": 1.5, "ort_global_vs_eager_paper_b16": 2.0, "ort_global_vs_eager_paper_b1": 2.5,
         "op_custom_vs_pure": 3.0}


# ---- timing -------------------------------------------------------------------------------------
def write_result(path, result: dict, machine: dict) -> None:
    """Write a benchmark's JSON and say where, with the load seen during the run."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out} ({machine['cpu']}, load average {machine['loadavg_start'][0]} -> {machine['loadavg_end'][0]})")


def round_robin(runners: dict, repeats: int, warmup: int = WARMUP, block: int = 1, seed: int = 0) -> dict:
    """{key: fn} -> {key: [seconds per call]}: `warmup` calls each, then `repeats` rounds calling every
    fn once, each round in a fresh (seeded) random order: machine noise hits all of them alike, and no
    fn always runs right after the same other one (what ran just before, an in-process model call or
    an HTTP request, changes how warm the caches and cores are). block > 1: each turn is one untimed
    call and then `block` timed ones in a row (a steady stream of the same call, caches warm with it,
    instead of each call after another fn's)."""
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    keys = list(runners)
    times = {k: [] for k in keys}
    order = random.Random(seed)
    for _ in range(repeats):
        order.shuffle(keys)
        for k in keys:
            if block > 1:
                runners[k]()
            for _ in range(block):
                t0 = time.perf_counter()
                runners[k]()
                times[k].append(time.perf_counter() - t0)
    return {k: times[k] for k in runners}


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
class _PaperMiniPointNet(MiniPointNet):
    """The paper's mini-PointNet: second MLP on [pooled broadcast, point feature], layers as they are."""

    def forward(self, patches):
        B, G, S, _ = patches.shape
        f = self.first_conv(patches.reshape(B * G, S, 3))
        f = torch.cat([f.max(1, keepdim=True).values.expand(-1, S, -1), f], -1)
        return self.second_conv(f).max(1).values.reshape(B, G, self.out_dim)


class _PaperSegHead(SegHead):
    """The seg head on its concatenated inputs: [interpolated tokens, xyz, local] and [point, global]."""

    def forward(self, points, centres, layer_tokens, category=None):
        feats = torch.cat(layer_tokens, dim=-1)
        glob = [feats.max(1).values, feats.mean(1)]
        if self.category_embed is not None:
            glob.append(self.category_embed(nn.functional.one_hot(category, self.num_categories).float()))
        x = [interpolate(points, centres, feats), points] + ([self.local(points)] if self.local is not None else [])
        x = self.propagate(torch.cat(x, -1))
        g = torch.cat(glob, -1).unsqueeze(1).expand(-1, x.shape[1], -1)
        return self.mlp(torch.cat([x, g], -1))


def paper_structure(model: nn.Module) -> nn.Module:
    """A copy of `model` that runs the paper's structure, without our inference shortcuts (same weights,
    same numbers to ~1e-5): the baseline of the issue-14 ratios."""
    plain = copy.deepcopy(model).eval()
    for m in plain.modules():
        if type(m) is MiniPointNet:
            m.__class__ = _PaperMiniPointNet
        elif type(m) is SegHead:
            m.__class__ = _PaperSegHead
    return plain


def without_parts(model: nn.Module) -> nn.Module:
    """A copy without the seg head (and its encoder): the torch form of the global graph, for counting."""
    g = copy.deepcopy(model).eval()
    g.seg_head = g.seg_encoder = None
    return g


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

    info = {"model": PYTHON_MODEL, "graph_mode": summary["mode"], "outputs": outputs,
            "server_start_s": round(server.start_seconds, 1),
            "transport": "HTTP, binary tensors, one request at a time",
            "config": (Path(summary["out_dir"]) / PYTHON_MODEL / "config.pbtxt").read_text()}
    return call, info


def export_graphs(model, paper, args, tmp: Path, skipped: dict) -> dict:
    """{runtime name: ORT session} for every ONNX graph timed (see the module doc)."""
    modes = ["custom_op", "pure"] if custom_ops_library() is not None else ["pure"]
    if "custom_op" not in modes:
        skipped["ort_custom_op"] = "custom-op kernel library could not be built (see the logged reason)"
    best = modes[0]  # the graph the server exports
    paths = {}
    for name, net, mode, fold in [("ort_reference", paper, best, False)] + [(f"ort_{m}", model, m, True) for m in modes]:
        t0 = time.perf_counter()
        paths[name] = export_onnx(net, tmp / f"{name}.onnx", mode=mode, fold_bn=fold)
        print(f"exported ONNX ({name}, {mode}) in {time.perf_counter() - t0:.0f} s", flush=True)
    paths["ort_global"] = global_graph(paths[f"ort_{best}"], tmp / "ort_global.onnx")
    if args.int8:
        paths["ort_global_int8"] = quantize_int8(paths["ort_global"], tmp / "ort_global_int8.onnx")
    else:
        skipped["ort_global_int8"] = "no --int8"
    return {name: ort_session(p, threads=args.threads) for name, p in paths.items()}


def bench_model(model, checkpoint: Path, args, tmp: Path, stack: contextlib.ExitStack) -> dict:
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(b, NUM_POINTS, 3, generator=gen) for b in BATCHES}
    skipped = {}
    paper = paper_structure(model)
    sessions = export_graphs(model, paper, args, tmp, skipped)

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
        runners["eager_paper", b] = lambda x=x: paper(x)
        runners["torch_eager", b] = lambda x=x: model(x)
        for name, sess in sessions.items():
            runners[name, b] = lambda s=sess, xn=xn: s.run(None, {"points": xn})
        if triton:
            runners["triton", b] = lambda xn=xn: triton(xn)

    # Same answers? (max |runtime - our eager| over the outputs each gives, at B=16)
    x16 = inputs[max(BATCHES)]
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in model(x16).items()}
        named = {"eager_paper": {k: v.numpy() for k, v in paper(x16).items()}}
    for name, s in sessions.items():
        named[name] = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"points": x16.numpy()})))
    if triton:
        named["triton"] = dict(zip(triton_info["outputs"], triton(x16.numpy())))
    max_diff = {name: max(float(np.abs(v - ref[k]).max()) for k, v in out.items()) for name, out in named.items()}

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


# which FLOP count (section 3) each runtime's graph runs
FLOPS_OF = {"eager_paper": "paper", "ort_reference": "paper", "torch_eager": "all_outputs", "ort_custom_op": "all_outputs",
            "ort_pure": "all_outputs", "triton": "all_outputs", "ort_global": "global", "ort_global_int8": "global"}


def report(model_res: dict, op_res: dict, flops: dict, mm_gflops: float) -> dict:
    print(f"\n1. Model throughput, {NUM_POINTS} points per shape")
    head = f"{'runtime':<16} {'batch':>5} {'median ms':>10} {'p90 ms':>9} {'shapes/s':>9}"
    print(head, "-" * len(head), sep="\n")
    sps = {}
    order = list(FLOPS_OF)
    for row in sorted(model_res["rows"], key=lambda r: (r["batch"], order.index(r["runtime"]))):
        sps[row["runtime"], row["batch"]] = row["shapes_per_s"]
        print(f"{row['runtime']:<16} {row['batch']:>5} {row['median_ms']:>10.1f} {row['p90_ms']:>9.1f} {row['shapes_per_s']:>9.1f}")
    for name, why in model_res["skipped"].items():
        print(f"{name:<16} skipped: {why}")
    for name, d in model_res["max_abs_diff_vs_eager"].items():
        print(f"max |{name} - torch_eager| over its outputs at batch {max(BATCHES)}: {d:.2e}")

    ratios = {}
    b16, b1 = max(BATCHES), min(BATCHES)
    print("issue 14 goals (ORT global graph, fp32):")
    for key, (base, b) in {"ort_global_vs_reference_b16": ("ort_reference", b16),
                           "ort_global_vs_eager_paper_b16": ("eager_paper", b16),
                           "ort_global_vs_eager_paper_b1": ("eager_paper", b1)}.items():
        ratios[key] = ratio(sps.get(("ort_global", b)), sps.get((base, b)))
        print(f"  ORT global / {base:<13} batch {b:>2}: {verdict(ratios[key], GOALS[key])}")
    for name in ("ort_global", "ort_global_int8"):
        for b in BATCHES:
            ratios[f"{name}_vs_all_outputs_b{b}"] = ratio(sps.get((name, b)), sps.get(("ort_custom_op", b)))
    print("ORT global / all-outputs graph (pruning alone):  " + ",  ".join(
        f"batch {b} {ratios[f'ort_global_vs_all_outputs_b{b}'] or float('nan'):.2f}x" for b in BATCHES))
    if ("ort_global_int8", b1) in sps:
        for b in BATCHES:
            ratios[f"ort_global_int8_vs_fp32_b{b}"] = ratio(sps.get(("ort_global_int8", b)), sps.get(("ort_global", b)))
        print("ORT global int8 / fp32:  " + ",  ".join(
            f"batch {b} {ratios[f'ort_global_int8_vs_fp32_b{b}'] or float('nan'):.2f}x" for b in BATCHES))
    for mode in ("custom_op", "pure"):
        for b in BATCHES:
            ratios[f"ort_{mode}_vs_eager_b{b}"] = ratio(sps.get((f"ort_{mode}", b)), sps.get(("torch_eager", b)))
        print(f"ORT {mode:<9} / torch_eager:  " + ",  ".join(
            f"batch {b} {ratios[f'ort_{mode}_vs_eager_b{b}'] or float('nan'):.2f}x" for b in BATCHES))
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
    print("GFLOP per shape (linear + attention matmuls, as bench_encoder counts them): "
          f"before (paper structure, all outputs) {flops['paper'] / 1e9:.3f}, all outputs as we run them "
          f"{flops['all_outputs'] / 1e9:.3f}, after (global graph) {flops['global'] / 1e9:.3f} "
          f"({100 * (1 - flops['global'] / flops['paper']):.0f}% fewer)")
    print(f"machine: torch.matmul 1024x1024 fp32 = {mm_gflops:.1f} GFLOP/s")
    efficiency = {}
    for rt, kind in FLOPS_OF.items():
        if (rt, b) in sps:
            eff = flops[kind] * sps[rt, b] / 1e9
            efficiency[rt] = {"gflops": eff, "percent_of_matmul": 100 * eff / mm_gflops, "flops": kind}
            print(f"{rt:<16} {eff:>7.1f} GFLOP/s = {100 * eff / mm_gflops:5.1f}% of matmul ({kind} FLOPs)")
    return {"ratios": ratios, "efficiency_b16": efficiency}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help=f"default: {DEFAULT_CHECKPOINT} if it exists, else tiny config")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads")
    ap.add_argument("--no-triton", action="store_true", help="skip the Triton runtime")
    ap.add_argument("--int8", action="store_true", help="also time the int8 global graph")
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
        one = torch.randn(1, NUM_POINTS, 3, generator=torch.Generator().manual_seed(0))
        flops = {"paper": count_flops(paper_structure(model), one), "all_outputs": count_flops(model, one),
                 "global": count_flops(without_parts(model), one)}
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
                                            "gflops_per_shape": {k: v / 1e9 for k, v in flops.items()}},
              "repeats": args.repeats, "warmup": WARMUP, "goals": GOALS, "matmul_gflops": mm_gflops,
              "model_throughput": model_res, "ops": op_res, **summary}
    write_result(args.json, result, machine)


if __name__ == "__main__":
    main()
