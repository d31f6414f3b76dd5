"""Parity checks of the CUDA path against the torch reference, shared by tests/test_cuda_ops.py (gpu marker)
and bench/gpu_check.py (which must also run where pytest is missing). Each returns a dict of plain
numbers with a boolean `ok`; torch + numpy only.
"""
from __future__ import annotations

import torch

from recon_serve.geometry import group as ref
from recon_serve.ops import cuda_ops


def cloud(B: int, N: int, seed: int, near_origin: float = 0.05, duplicates: float = 0.0) -> torch.Tensor:
    """[B,N,3] points in [-1,1]^3; a share `near_origin` shrunk within |p|^2 <= 1e-3 (skip_origin's rule),
    a share `duplicates` copies of other points (distance ties)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, N, 3, generator=g) * 2 - 1
    n_small, n_dup = int(N * near_origin), int(N * duplicates)
    if n_small:
        x[:, 1:1 + n_small] *= 0.01  # index 0 stays: FPS starts there whatever it is
    if n_dup:
        src = torch.randint(0, N, (n_dup,), generator=g)
        x[:, N - n_dup:] = x[:, src]
    return x


def check_fps(N: int, npoint: int, B: int = 4, skip_origin: bool = False, force_global: bool = False,
              seed: int = 0, device: str = "cuda") -> dict:
    """CUDA FPS indices against the torch loop on the same device: identical, or `ok` is False."""
    x = cloud(B, N, seed, duplicates=0.02).to(device)
    want = ref.farthest_point_sample(x, npoint, skip_origin=skip_origin)
    got = cuda_ops.farthest_point_sample(x, npoint, skip_origin=skip_origin, force_global=force_global)
    same = (got == want).all(dim=1)
    first = [int((g != w).nonzero()[0]) for g, w, s in zip(got, want, same) if not s]
    on_cpu = ref.farthest_point_sample(x.cpu(), npoint, skip_origin=skip_origin)  # what the ORT kernel matches
    return {"N": N, "npoint": npoint, "B": B, "skip_origin": skip_origin, "force_global": force_global,
            "ok": bool(same.all()), "clouds_differing": int((~same).sum()), "first_differing_step": first,
            "equal_cpu_reference": bool(torch.equal(got.cpu(), on_cpu))}


def check_knn(N: int, M: int, k: int, B: int = 4, duplicates: float = 0.0, seed: int = 0, device: str = "cuda") -> dict:
    """CUDA kNN against torch topk: `identical` indices, and `ok` when any difference is a distance tie."""
    x = cloud(B, N, seed, duplicates=duplicates).to(device)
    q = cloud(B, M, seed + 1).to(device)
    want = ref.knn(k, x, q)
    got = cuda_ops.knn(k, x, q)
    d = ref.square_distance(q, x)
    same_dist = torch.equal(torch.gather(d, 2, got), torch.gather(d, 2, want))
    return {"N": N, "M": M, "k": k, "B": B, "duplicates": duplicates, "identical": bool(torch.equal(got, want)),
            "rows_differing": int((got != want).any(-1).sum()), "ok": same_dist,
            "equal_cpu_reference": bool(torch.equal(got.cpu(), ref.knn(k, x.cpu(), q.cpu())))}


def check_backend(checkpoint, batch: int = 4, bf16: bool = False, seed: int = 0, device: str = "cuda",
                  cpu_backend=None) -> dict:
    """TorchBackend on `device` (fp32 with TF32 off, or bf16 autocast) against the CPU fp32 backend.

    fp32 passes within atol=rtol=1e-4 per output; bf16 passes when the mean cosine similarity of the
    embeddings is >= 0.99 (its max abs differences and the logits' top-1 agreement are reported).
    """
    from recon_serve.backends.torch_backend import TorchBackend

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        cpu = cpu_backend or TorchBackend(checkpoint)
        gpu = TorchBackend(checkpoint, device=device, bf16=bf16)
        x = cloud(batch, cpu.model.cfg.num_points, seed, near_origin=0.0).numpy()
        want, got = cpu.infer(x), gpu.infer(x)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    out = {"batch": batch, "bf16": bf16, "max_abs_diff": {}, "kernels": cuda_ops.supports(torch.zeros(1, device=device))}
    close = True
    for name, w in want.items():
        w, g = torch.from_numpy(w), torch.from_numpy(got[name])
        out["max_abs_diff"][name] = float((w - g).abs().max())
        close &= bool(torch.allclose(g, w, atol=1e-4, rtol=1e-4))
    cos = torch.nn.functional.cosine_similarity(torch.from_numpy(got["embedding"]), torch.from_numpy(want["embedding"]))
    out["embedding_cosine_mean"] = float(cos.mean())
    if "logits" in want:
        out["top1_agreement"] = float((got["logits"].argmax(-1) == want["logits"].argmax(-1)).mean())
    out["ok"] = out["embedding_cosine_mean"] >= 0.99 if bf16 else close
    return out
