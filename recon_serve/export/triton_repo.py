"""Write a checkpoint as an NVIDIA Triton model repository: two flavours sharing one ONNX graph, and TensorRT.

    out_dir/recon_onnx/config.pbtxt        platform onnxruntime_onnx: the stock NGC Triton image
    out_dir/recon_onnx/<v>/model.onnx      (+ libpoint_ops.so, model_card.json)
    out_dir/recon_python/config.pbtxt      backend python: any Triton with the python backend, incl. the
    out_dir/recon_python/<v>/model.py      CPU-only server bundled in nvidia-pytriton (see triton_server)
    out_dir/recon_python/<v>/model.onnx    (+ libpoint_ops.so, model_card.json, checkpoint.pt)
    out_dir/recon_trt/config.pbtxt         platform tensorrt_plan: a GPU Triton with the TensorRT backend
    out_dir/recon_trt/<v>/model.plan       (+ libpoint_ops_trt.so, model_card.json); the plan is built only
                                           where the tensorrt module imports and a GPU is present

model_card.json carries the labels and preprocessing, so a server needs no checkpoint. The configs of
the shipped default are tracked in git (model_repository/ at the repository root, its version folders
holding only a .gitkeep placeholder, which counts as a free version); `default_configs()` regenerates them.
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
TRT_MODEL = "recon_trt"
MODELS = (ONNX_MODEL, PYTHON_MODEL, TRT_MODEL)
TRT_LIBRARY_NAME = "libpoint_ops_trt.so"
PLAN_FILE = "model.plan"
PLACEHOLDER = ".gitkeep"  # keeps an empty version folder in git; such a folder is a free version
DEFAULT_DEPLOY_ROOT = "/models"  # where compose.yaml mounts the repository for Triton
LIBRARY_NAME = "libpoint_ops.so"
CHECKPOINT_FILE = "checkpoint.pt"  # the source checkpoint, kept beside the python model
EXPORT_MODES = ("auto", "custom_op", "pure")


def model_config(name: str, outputs: dict[str, list[int]], *, platform: str | None = None, backend: str | None = None,
                 max_batch_size: int = 64, preferred_batch_sizes=(4, 8, 16, 32), max_queue_delay_us: int = 2000,
                 op_library: str | None = None, parameters: dict[str, str] | None = None,
                 comments: list[str] = (), gpu: bool = False) -> str:
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
              f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    if gpu:
        lines += ["instance_group [ { kind: KIND_GPU count: 1 } ]"]
    else:
        lines += ["# KIND_CPU runs anywhere; on a GPU host use KIND_GPU (recon_python then also needs onnxruntime-gpu in its env).",
                  "instance_group [ { kind: KIND_CPU count: 1 } ]"]
    if op_library:
        lines += ["model_operations {", f'  op_library_filename: "{op_library}"', "}"]
    for key, value in (parameters or {}).items():
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"


def is_placeholder(d: Path) -> bool:
    """A version folder holding nothing but the .gitkeep that keeps it in git: free for an export."""
    return d.is_dir() and {p.name for p in d.iterdir()} == {PLACEHOLDER}


def version_dirs(model_dir: str | Path) -> list[Path]:
    """The numbered version folders of one model, placeholders left out."""
    d = Path(model_dir)
    return [p for p in d.iterdir() if p.is_dir() and p.name.isdigit() and not is_placeholder(p)] if d.is_dir() else []


def next_version(out_dir: Path) -> int:
    """One past the highest numbered version of any model, so all stay in step."""
    taken = [int(p.name) for m in MODELS for p in version_dirs(Path(out_dir) / m)]
    return max(taken, default=0) + 1


def latest_version(model_dir: str | Path) -> Path:
    versions = version_dirs(model_dir)
    if not versions:
        raise FileNotFoundError(f"no numbered version under {model_dir}")
    return max(versions, key=lambda p: int(p.name))


def _export(model, path: Path, mode: str, checkpoint_path: Path) -> tuple[str, str | None, Path | None]:
    """Export as asked; 'auto' takes the custom-op graph when the kernel library builds. Returns (mode, note, lib).
    The graph the server caches for this checkpoint is the same one (every output, custom ops when the
    library builds), so it is copied from that cache, filled first if need be: a checkpoint is exported
    once for serving, the repository and a deploy."""
    from recon_serve.backends.ort_backend import export_cached
    from recon_serve.export.onnx import export_onnx
    from recon_serve.ops import custom_ops_library
    from recon_serve.settings import Settings

    if mode not in EXPORT_MODES:
        raise ValueError(f"mode must be one of {EXPORT_MODES}, not {mode!r}")
    available = custom_ops_library()
    lib = available if mode != "pure" else None
    if mode == "custom_op" and lib is None:
        raise RuntimeError("custom-op library unavailable (see the logged reason); use mode='pure' or 'auto'")
    note = None
    if lib is None and mode == "auto":
        note = "pure ONNX graph (FPS as Scan, kNN as TopK): the custom-op library could not be built at export time"
    used = "custom_op" if lib else "pure"
    cached = None
    if (lib is None) == (available is None):  # the graph the server caches: custom ops when the library builds
        cached = export_cached(checkpoint_path, Path(Settings.from_env().cache_dir), "parts")
    if cached and json.loads((cached / "model_card.json").read_text())["onnx"]["mode"] == used:
        shutil.copy2(cached / "model.onnx", path)
    else:  # pure asked for beside a built library, or a cache entry made while the library was missing
        export_onnx(model, path, mode=used)
    return used, note, lib


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


def repository_configs(outputs: dict[str, list[int]], version: int, *, checkpoint_name: str, lib: bool,
                       note: str | None = None, deploy_root: str, threads: int = 2, max_batch_size: int = 64,
                       preferred_batch_sizes=(4, 8, 16, 32), max_queue_delay_us: int = 2000) -> dict[str, str]:
    """{model name: config.pbtxt text} for one export. lib: the ONNX graph has the custom ops (recon_onnx
    then names this version's libpoint_ops.so under deploy_root, the repository's path on the serving host)."""
    shared = {"max_batch_size": max_batch_size, "preferred_batch_sizes": preferred_batch_sizes,
              "max_queue_delay_us": max_queue_delay_us}
    comments = [f"written by recon-serve from {checkpoint_name}; labels and preprocessing in <version>/model_card.json"]
    deploy = deploy_root.rstrip("/")
    trt_comments = [comments[0],
                    "TensorRT plugins load server-wide, not per model: start tritonserver with",
                    f"--backend-config=tensorrt,plugins={deploy}/{TRT_MODEL}/{version}/{TRT_LIBRARY_NAME} (or LD_PRELOAD it).",
                    f"{PLAN_FILE} is built by recon-serve export where the tensorrt module and a GPU are present."]
    return {
        ONNX_MODEL: model_config(
            ONNX_MODEL, outputs, platform="onnxruntime_onnx", **shared,
            op_library=f"{deploy}/{ONNX_MODEL}/{version}/{LIBRARY_NAME}" if lib else None,
            comments=comments + ([note] if note else []) + (
                ["custom ops: the library path must hold on the serving host (see deploy_root); "
                 "it names this version's copy"] if lib else [])),
        PYTHON_MODEL: model_config(PYTHON_MODEL, outputs, backend="python", **shared,
                                   parameters={"intra_op_num_threads": str(threads)},
                                   comments=comments + ([note] if note else [])),
        TRT_MODEL: model_config(TRT_MODEL, outputs, platform="tensorrt_plan", **shared, comments=trt_comments, gpu=True),
    }


def default_configs() -> dict[str, str]:
    """The configs tracked in model_repository/: the shipped default, version 1, custom-op graph, deploy root
    /models (compose.yaml's `recon-serve export --out ... --deploy-root /models` writes exactly these)."""
    from recon_serve.model.factory import DEFAULT_CHECKPOINT, create_model

    model, _ = create_model(DEFAULT_CHECKPOINT)
    return repository_configs(_output_dims(model), 1, checkpoint_name=Path(DEFAULT_CHECKPOINT).name, lib=True,
                              deploy_root=DEFAULT_DEPLOY_ROOT)


def _tensorrt_plan(model, work: Path, used: str, d: Path, max_batch_size: int) -> str | None:
    """Build recon_trt's plan + plugin library into d; returns None, or why not (the config is written anyway)."""
    from recon_serve.export.tensorrt.build import build_engine, build_plugin_library, tensorrt_available

    why = tensorrt_available()
    if why:
        return f"{TRT_MODEL}: {PLAN_FILE} not built ({why}); its config is written, build the plan on a GPU host"
    try:
        graph = work / "model.onnx"
        if used != "custom_op":  # TensorRT takes FPS/kNN as plugins, so it needs the custom-op graph
            from recon_serve.export.onnx import export_onnx

            graph = export_onnx(model, work / "model_trt.onnx", mode="custom_op")
        lib = build_plugin_library()
        cfg = model.cfg
        build_engine(graph, d / PLAN_FILE, lib, max_batch=max_batch_size,
                     points=(max(cfg.num_group, cfg.group_size), cfg.num_points, 16384))
        shutil.copy2(lib, d / TRT_LIBRARY_NAME)
    except Exception as e:  # noqa: BLE001  (TensorRT is optional: the other models stand)
        return f"{TRT_MODEL}: {PLAN_FILE} not built ({type(e).__name__}: {e})"
    return None


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
    dirs = {m: out_dir / m / str(version) for m in MODELS}
    for d in dirs.values():
        if d.exists() and not is_placeholder(d):
            raise FileExistsError(f"{d} exists; pick another version or leave version=None")
    work = out_dir / f".export-{version}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        used, note, lib = _export(model, work / "model.onnx", mode, checkpoint_path)
        domains = sorted({o.domain or "ai.onnx" for o in onnx.load(str(work / "model.onnx")).opset_import})
        outputs = _output_dims(model)
        card = _card(ckpt or {}, model, checkpoint_path, version, used, domains, outputs)
        configs = repository_configs(outputs, version, checkpoint_name=checkpoint_path.name, lib=lib is not None,
                                     note=note, deploy_root=deploy_root or str(out_dir), threads=threads,
                                     max_batch_size=max_batch_size, preferred_batch_sizes=preferred_batch_sizes,
                                     max_queue_delay_us=max_queue_delay_us)
        site = python_site_packages or sysconfig.get_paths()["purelib"]
        for name, d in dirs.items():
            d.mkdir(parents=True, exist_ok=True)
            if name != TRT_MODEL:
                shutil.copy2(work / "model.onnx", d / "model.onnx")
                if lib:
                    shutil.copy2(lib, d / LIBRARY_NAME)
            (d / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
            (out_dir / name / "config.pbtxt").write_text(configs[name])
        (dirs[PYTHON_MODEL] / "model.py").write_text(_model_py(str(site)))
        shutil.copy2(checkpoint_path, dirs[PYTHON_MODEL] / CHECKPOINT_FILE)  # a retrain starts from it
        trt_note = _tensorrt_plan(model, work, used, dirs[TRT_MODEL], max_batch_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"out_dir": str(out_dir), "version": version, "mode": used, "note": note,
            "models": {m: str(d) for m, d in dirs.items()}, "outputs": outputs,
            "tensorrt": {"plan": trt_note is None, "note": trt_note}}
