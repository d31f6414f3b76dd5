"""CPU inference throughput of the ReCon forward pass, per model config, batch size and precision.

What is timed: `model(points)` in eval mode under `torch.no_grad()` on 1,024 random-normal points
per shape (fixed seed), i.e. FPS + kNN grouping, the encoder (patch embedding, positional MLP,
ReCon blocks with their 3-query branch) and the heads (text projection, class head, 10 classes).
Each (config, batch, precision) runs 2 warm-up iterations, then `--repeats` timed ones; the table
gives median and p90 ms per batch and shapes/s (= batch / median seconds). Precision is fp32, plus
bf16 autocast where `cpu_has_fast_bf16()` (AMX / AVX512-BF16) says it pays.

Also reported: parameter count and GFLOPs per shape, counted (not guessed) on one forward: a
torch-function mode adds 2 * in_features * out_features * rows for each F.linear call (nn.Linear
layers and the split / BN-folded weights the mini-PointNet and seg head apply directly) and
2 * 2 * B*h*Nq*Nk*d for each scaled_dot_product_attention call (QK^T and attn@V). Grouping,
norms, activations and pooling are not counted.

Run:  python bench/bench_encoder.py [--configs tiny,small,base] [--batches 1,16] [--repeats 10]
                                    [--threads T] [--json bench/results/encoder.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from recon_serve.model.factory import create_model
from recon_serve.runtime import autocast_context, cpu_has_fast_bf16

NUM_POINTS = 1024
WARMUP = 2


class _CountFlops(TorchFunctionMode):
    """Adds the matmul FLOPs of every F.linear and scaled_dot_product_attention call to `self.flops`
    (a mode, not nn.Linear hooks, so weights applied piecewise with F.linear count too)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear:
            x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            self.flops += 2 * (x.numel() // x.shape[-1]) * w.shape[0] * w.shape[1]
        elif func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            *lead, nq, d = q.shape
            self.flops += 2 * 2 * int(np.prod(lead)) * nq * k.shape[-2] * d  # QK^T and attn @ V
        return func(*args, **(kwargs or {}))


def count_flops(model: nn.Module, points: torch.Tensor) -> int:
    """FLOPs (multiply-add = 2) of the linear layers and attention matmuls one forward actually runs."""
    with torch.no_grad(), _CountFlops() as counter:
        model(points)
    return counter.flops


def time_forward(model: nn.Module, points: torch.Tensor, repeats: int, bf16: bool) -> list[float]:
    """Seconds per call of model(points): WARMUP untimed calls, then `repeats` timed ones."""
    times = []
    with torch.no_grad(), autocast_context("cpu", enabled=bf16):
        for i in range(WARMUP + repeats):
            t0 = time.perf_counter()
            model(points)
            if i >= WARMUP:
                times.append(time.perf_counter() - t0)
    return times


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="tiny,small,base")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", default="bench/results/encoder.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = [c for c in args.configs.split(",") if c]
    batches = [int(b) for b in args.batches.split(",") if b]
    precisions = ["fp32"] + (["bf16"] if cpu_has_fast_bf16() else [])

    rows = []
    header = f"{'config':<7} {'prec':<5} {'batch':>5} {'params':>8} {'GFLOP/shape':>11} {'median ms':>10} {'p90 ms':>9} {'shapes/s':>9}"
    print(header, "-" * len(header), sep="\n", flush=True)
    for name in configs:
        torch.manual_seed(0)
        model, _ = create_model(name, num_classes=10)
        model.eval()
        params = sum(p.numel() for p in model.parameters())
        gen = torch.Generator().manual_seed(0)
        flops = count_flops(model, torch.randn(1, NUM_POINTS, 3, generator=gen))
        for prec in precisions:
            for batch in batches:
                points = torch.randn(batch, NUM_POINTS, 3, generator=torch.Generator().manual_seed(0))
                t = np.array(time_forward(model, points, args.repeats, bf16=prec == "bf16"))
                med, p90 = float(np.median(t)), float(np.percentile(t, 90))
                row = dict(config=name, precision=prec, batch=batch, num_points=NUM_POINTS, params=params,
                           gflops_per_shape=flops / 1e9, median_ms=med * 1e3, p90_ms=p90 * 1e3,
                           shapes_per_s=batch / med, repeats=args.repeats)
                rows.append(row)
                print(f"{name:<7} {prec:<5} {batch:>5} {params / 1e6:>7.2f}M {flops / 1e9:>11.3f} "
                      f"{med * 1e3:>10.1f} {p90 * 1e3:>9.1f} {batch / med:>9.1f}", flush=True)

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu=cpu_model(),
                   fast_bf16=cpu_has_fast_bf16(), python=platform.python_version(),
                   date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {out} ({len(rows)} rows; torch {machine['torch']}, {machine['threads']} threads, {machine['cpu']})")


if __name__ == "__main__":
    main()
