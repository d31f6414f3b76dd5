"""Write a checkpoint as an NVIDIA Triton model repository, in two flavours sharing one ONNX graph.

    out_dir/recon_onnx/config.pbtxt        platform onnxruntime_onnx: the stock NGC Triton image
    out_dir/recon_onnx/<v>/model.onnx      (+ libpoint_ops.so, model_card.json)
    out_dir/recon_python/config.pbtxt      backend python: any Triton with the python backend, incl. the
    out_dir/recon_python/<v>/model.py      CPU-only server bundled in nvidia-pytriton (see triton_server)
    out_dir/recon_python/<v>/model.onnx    (+ libpoint_ops.so, model_card.json, checkpoint.pt)

model_card.json carries the labels and preprocessing, so a server needs no checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sysconfig
import time
from pathlib import Path

ONNX_MODEL = "recon_onnx"
PYTHON_MODEL = "recon_python"
LIBRARY_NAME = "libpoint_ops.so"
CHECKPOINT_FILE = "checkpoint.pt"  # the source checkpoint, kept beside the python model
EXPORT_MODES = ("auto", "custom_op", "pure")


def model_config(name: str, outputs: dict[str, list[int]], *, platform: str | None = None, backend: str | None = None,
                 max_batch_size: int = 64, preferred_batch_sizes=(4, 8, 16, 32), max_queue_delay_us: int = 2000,
                 op_library: str | None = None, parameters: dict[str, str] | None = None,
                 comments: list[str] = ()) -> str:
    """config.pbtxt text (Triton's ModelConfig protobuf, text format). Outputs are FP32, dims without the batch."""
    lines = [f"# {c}" for c in comments] + [f'name: "{name}"']
    lines += [f'platform: "{platform}"'] if platform else [f'backend: "{backend}"']
    lines += [f"max_batch_size: {max_batch_size}",
              'input [ { name: "points" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]  # [batch, N points, xyz]',
              "output ["]
    lines += [f'  {{ name: "{n}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, d))} ] }}'
              f'{"," if i < len(outputs) - 1 else ""}' for i, (n, d) in enumerate(outputs.items())]
    sizes = ", ".join(str(b) for b in preferred_batch_sizes if b <= max_batch_size)
    lines += ["]", "dynamic_batching {", f"  preferred_batch_size: [ {sizes} ]",
              f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}",
              "# KIND_CPU runs anywhere; on a GPU host use KIND_GPU (recon_python then also needs onnxruntime-gpu in its env).",
              "instance_group [ { kind: KIND_CPU count: 1 } ]"]
    if op_library:
        lines += ["model_operations {", f'  op_library_filename: "{op_library}"', "}"]
    for key, value in (parameters or {}).items():
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"


def next_version(out_dir: Path) -> int:
    """One past the highest numbered version of either model, so both stay in step."""
    taken = [int(p.name) for m in (ONNX_MODEL, PYTHON_MODEL) if (out_dir / m).is_dir()
             for p in (out_dir / m).iterdir() if p.is_dir() and p.name.isdigit()]
    return max(taken, default=0) + 1


def latest_version(model_dir: str | Path) -> Path:
    versions = [p for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise FileNotFoundError(f"no numbered version under {model_dir}")
    return max(versions, key=lambda p: int(p.name))


def _export(model, path: Path, mode: str) -> tuple[str, str | None, Path | None]:
    """Export as asked; 'auto' takes the custom-op graph when the kernel library builds. Returns (mode, note, lib)."""
    from recon_serve.export.onnx import export_onnx
    from recon_serve.ops import custom_ops_library

    if mode not in EXPORT_MODES:
        raise ValueError(f"mode must be one of {EXPORT_MODES}, not {mode!r}")
    lib = custom_ops_library() if mode != "pure" else None
    if mode == "custom_op" and lib is None:
        raise RuntimeError("custom-op library unavailable (see the logged reason); use mode='pure' or 'auto'")
    note = None
    if lib is None and mode == "auto":
        note = "pure ONNX graph (FPS as Scan, kNN as TopK): the custom-op library could not be built at export time"
    export_onnx(model, path, mode="custom_op" if lib else "pure")
    return ("custom_op" if lib else "pure"), note, lib


def _output_dims(model) -> dict[str, list[int]]:
    """Per-item output dims: fixed sizes, -1 where the size follows N (part_logits)."""
    import torch

    from recon_serve.export.onnx import OUTPUTS

    n = model.cfg.num_points
    with torch.no_grad():
        out = model(torch.rand(1, n, 3, generator=torch.Generator().manual_seed(0)))
    return {k: [-1, out[k].shape[-1]] if k == "part_logits" else list(out[k].shape[1:]) for k in OUTPUTS if k in out}


def _card(ckpt: dict, model, checkpoint_path: Path, version: int, mode: str, domains: list[str], outputs) -> dict:
    from recon_serve.backends.base import card_from_checkpoint
    from recon_serve.export.onnx import INPUT

    sha = hashlib.sha256(checkpoint_path.read_bytes()).hexdigest()
    return {
        **card_from_checkpoint(ckpt, model, checkpoint_path, sha),
        "version": version,
        "embedding_dim": outputs.get("embedding", [0])[0],
        "shape_embedding_dim": outputs.get("shape_embedding", [0])[0],
        "onnx": {"file": "model.onnx", "mode": mode, "domains": domains,
                 "custom_op_library": LIBRARY_NAME if mode == "custom_op" else None,
                 "input": {"name": INPUT, "dtype": "float32", "shape": ["batch", "num_points", 3]},
                 "outputs": {k: ["batch", *("num_points" if d == -1 else d for d in v)] for k, v in outputs.items()}},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _model_py(site_packages: str) -> str:
    template = (Path(__file__).with_name("triton_python_model.py")).read_text()
    filled, n = re.subn(r"^SITE_PACKAGES = None.*$", f"SITE_PACKAGES = {site_packages!r}", template, count=1, flags=re.M)
    assert n == 1, "triton_python_model.py lost its SITE_PACKAGES line"
    return filled


def write_model_repository(checkpoint_path=None, out_dir="model_repository", version: int | None = None, *,
                           mode: str = "auto", max_batch_size: int = 64, preferred_batch_sizes=(4, 8, 16, 32),
                           max_queue_delay_us: int = 2000, threads: int = 2, python_site_packages: str | None = None,
                           deploy_root: str | None = None) -> dict:
    """Export `checkpoint_path` (default: the shipped model) into out_dir as version `version` (next free if None).

    python_site_packages: the site-packages (numpy<2 + onnxruntime) that model.py puts on sys.path; defaults to
    this interpreter's. deploy_root: where out_dir will sit on the serving host (the ONNX config names the
    custom-op library by absolute path); defaults to out_dir here. Returns a summary dict.
    """
    import onnx

    from recon_serve.model.factory import DEFAULT_CHECKPOINT, create_model

    checkpoint_path = Path(checkpoint_path or DEFAULT_CHECKPOINT).resolve()
    model, ckpt = create_model(checkpoint_path)
    out_dir = Path(out_dir).resolve()
    version = version or next_version(out_dir)
    dirs = {m: out_dir / m / str(version) for m in (ONNX_MODEL, PYTHON_MODEL)}
    for d in dirs.values():
        if d.exists():
            raise FileExistsError(f"{d} exists; pick another version or leave version=None")
    work = out_dir / f".export-{version}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        used, note, lib = _export(model, work / "model.onnx", mode)
        domains = sorted({o.domain or "ai.onnx" for o in onnx.load(str(work / "model.onnx")).opset_import})
        outputs = _output_dims(model)
        card = _card(ckpt or {}, model, checkpoint_path, version, used, domains, outputs)
        shared = {"max_batch_size": max_batch_size, "preferred_batch_sizes": preferred_batch_sizes,
                  "max_queue_delay_us": max_queue_delay_us}
        comments = [f"written by recon-serve from {checkpoint_path.name}; labels and preprocessing in <version>/model_card.json"]
        if note:
            comments.append(note)
        deploy = (deploy_root or str(out_dir)).rstrip("/")
        configs = {
            ONNX_MODEL: model_config(
                ONNX_MODEL, outputs, platform="onnxruntime_onnx", **shared,
                op_library=f"{deploy}/{ONNX_MODEL}/{version}/{LIBRARY_NAME}" if lib else None,
                comments=comments + (["custom ops: the library path must hold on the serving host (see deploy_root); "
                                      "it names this version's copy"] if lib else [])),
            PYTHON_MODEL: model_config(PYTHON_MODEL, outputs, backend="python", **shared,
                                       parameters={"intra_op_num_threads": str(threads)}, comments=comments),
        }
        site = python_site_packages or sysconfig.get_paths()["purelib"]
        for name, d in dirs.items():
            d.mkdir(parents=True)
            shutil.copy2(work / "model.onnx", d / "model.onnx")
            if lib:
                shutil.copy2(lib, d / LIBRARY_NAME)
            (d / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
            (out_dir / name / "config.pbtxt").write_text(configs[name])
        (dirs[PYTHON_MODEL] / "model.py").write_text(_model_py(str(site)))
        shutil.copy2(checkpoint_path, dirs[PYTHON_MODEL] / CHECKPOINT_FILE)  # a retrain starts from it
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"out_dir": str(out_dir), "version": version, "mode": used, "note": note,
            "models": {m: str(d) for m, d in dirs.items()}, "outputs": outputs}
