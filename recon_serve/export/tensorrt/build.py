"""Build the TensorRT plugin library and a serialized engine (model.plan) from the custom-op ONNX graph.

No wheel ships TensorRT's C++ headers, so the plugin build reads them from $RECON_SERVE_TRT_INCLUDE, the
cache (~/.cache/recon-serve/tensorrt-include: the include/ folder of github.com/NVIDIA/TensorRT at the
tag of the TensorRT you run), or a system install (libnvinfer-dev). The headers must match the TensorRT
that loads the library. Linking needs libnvinfer ($RECON_SERVE_TRT_LIB, the `tensorrt` wheel's
tensorrt_libs, or the system's); `compile_check` compiles without linking, so it runs on a CPU host.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
from pathlib import Path

from recon_serve.ops.build import cache_dir
from recon_serve.ops.cuda_toolchain import CUDA_DIR, KERNELS, NVCC_FLAGS, _run, compile_object, find_nvcc, gencode

PLUGINS = Path(__file__).with_name("point_plugins.cpp")
LIBRARY_NAME = "libpoint_ops_trt.so"
_SYSTEM_INCLUDES = ("/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu", "/usr/include",
                    "/usr/local/tensorrt/include")


def trt_include() -> Path | None:
    """A directory holding NvInfer.h and NvInferRuntime.h, or None."""
    for d in (os.environ.get("RECON_SERVE_TRT_INCLUDE"), str(cache_dir() / "tensorrt-include"), *_SYSTEM_INCLUDES):
        if d and (Path(d) / "NvInferRuntime.h").is_file() and (Path(d) / "NvInfer.h").is_file():
            return Path(d)
    return None


def trt_version(include: Path) -> str:
    """TensorRT's version as its headers state it, e.g. '11.1.0'."""
    text = (include / "NvInferVersion.h").read_text()
    parts = []
    for key in ("MAJOR", "MINOR", "PATCH"):
        for line in text.splitlines():
            bits = line.split()
            if len(bits) == 3 and bits[0] == "#define" and bits[1] in (f"TRT_{key}_ENTERPRISE", f"NV_TENSORRT_{key}",
                                                                       f"TRT_{key}_RTX"):
                parts.append(bits[2])
                break
    return ".".join(parts)


def _flags(include: Path) -> list[str]:
    return ["-isystem", str(include), "-Xcompiler", "-Wno-deprecated-declarations"]


def compile_check(out_dir: Path) -> dict:
    """nvcc -c the plugins and the kernels (no link, no GPU): seconds per object. Raises if a tool is missing."""
    include = trt_include()
    if include is None:
        raise FileNotFoundError("TensorRT headers not found: set RECON_SERVE_TRT_INCLUDE to TensorRT's include/ dir")
    out_dir = Path(out_dir)
    return {"tensorrt_headers": trt_version(include),
            "plugins_s": compile_object(PLUGINS, out_dir / "point_plugins.o", extra=_flags(include)),
            "kernels_s": compile_object(KERNELS, out_dir / "point_ops_cuda.o")}


def _trt_lib_dir() -> Path | None:
    if os.environ.get("RECON_SERVE_TRT_LIB"):
        return Path(os.environ["RECON_SERVE_TRT_LIB"])
    try:
        import tensorrt_libs  # the tensorrt wheel's shared libraries

        return Path(tensorrt_libs.__path__[0])
    except ImportError:
        return None


def build_plugin_library(archs=("80", "90")) -> Path:
    """The plugin .so in the cache (named by a hash of sources + headers), built with nvcc if absent."""
    include, nvcc = trt_include(), find_nvcc()
    if include is None or nvcc is None:
        raise FileNotFoundError(f"need TensorRT headers ({include}) and nvcc ({nvcc})")
    sources = [KERNELS, PLUGINS, CUDA_DIR / "point_ops_cuda.h"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources) + (include / "NvInferRuntime.h").read_bytes()
                            + ",".join(archs).encode()).hexdigest()[:12]
    out = cache_dir() / f"libpoint_ops_trt-{digest}.so"
    if out.is_file():
        return out
    link = []
    lib_dir = _trt_lib_dir()
    if lib_dir is not None:
        names = sorted(p.name for p in lib_dir.glob("libnvinfer.so*"))
        link = [f"-L{lib_dir}", f"-Xlinker=-rpath,{lib_dir}", f"-l:{names[0]}" if names else "-lnvinfer"]
    else:
        link = ["-lnvinfer"]
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    _run([str(nvcc), "-shared", *NVCC_FLAGS, *gencode(archs), f"-I{CUDA_DIR}", *_flags(include), str(KERNELS),
          str(PLUGINS), *link, "-o", str(tmp)])
    tmp.replace(out)
    return out


def tensorrt_available() -> str | None:
    """None when the `tensorrt` module imports and a CUDA device is there, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python module is not installed"
    import torch

    return None if torch.cuda.is_available() else "no CUDA device to build the engine on"


def build_engine(onnx_path, plan_path, plugin_lib, *, input_name: str = "points", max_batch: int = 64,
                 points: tuple[int, int, int] = (64, 1024, 16384), opt_batch: int = 16, bf16: bool = False,
                 workspace_bytes: int = 1 << 30) -> Path:
    """Parse the custom-op ONNX graph (plugins from `plugin_lib`) and write a serialized engine to plan_path.

    One optimisation profile: batch 1..max_batch (opt opt_batch), points per cloud points=(min, opt, max).
    bf16=True lets TensorRT pick bf16 kernels (a weakly typed network); the FPS/kNN plugins stay fp32.
    """
    import tensorrt as trt

    ctypes.CDLL(str(plugin_lib), mode=ctypes.RTLD_GLOBAL)  # its creators register themselves on load
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if bf16:
        config.set_flag(trt.BuilderFlag.BF16)
    n_min, n_opt, n_max = points
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (1, n_min, 3), (min(opt_batch, max_batch), n_opt, 3), (max_batch, n_max, 3))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT failed to build the engine (see its log above)")
    plan_path = Path(plan_path)
    plan_path.write_bytes(bytes(plan))
    return plan_path


def run_plan(plan_path, plugin_lib, x, input_name: str = "points") -> dict:
    """{output name: array} of a serialized engine on one batch `x` [B,N,3] float32 (CUDA buffers from
    torch): how check-export compares a plan with torch. Needs the tensorrt module and a GPU."""
    import numpy as np
    import tensorrt as trt
    import torch

    ctypes.CDLL(str(plugin_lib), mode=ctypes.RTLD_GLOBAL)
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(plan_path).read_bytes())
    if engine is None:
        raise RuntimeError(f"TensorRT could not load {plan_path} (built by another TensorRT version or GPU?)")
    context = engine.create_execution_context()
    points = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda()
    context.set_input_shape(input_name, tuple(points.shape))
    context.set_tensor_address(input_name, points.data_ptr())
    outputs = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
            continue
        dtype = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                 trt.DataType.BF16: torch.bfloat16, trt.DataType.INT64: torch.int64}[engine.get_tensor_dtype(name)]
        outputs[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
        context.set_tensor_address(name, outputs[name].data_ptr())
    stream = torch.cuda.current_stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError(f"TensorRT failed to run {plan_path}")
    stream.synchronize()
    return {k: v.float().cpu().numpy() for k, v in outputs.items()}


__all__ = ["LIBRARY_NAME", "build_engine", "build_plugin_library", "compile_check", "run_plan", "tensorrt_available",
           "trt_include"]
