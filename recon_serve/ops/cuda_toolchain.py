"""Find nvcc and compile the CUDA sources without a GPU: the build check CPU-only CI can run.

nvcc comes from $RECON_SERVE_NVCC, $CUDA_HOME, PATH, or NVIDIA's PyPI wheels (`nvidia-cuda-nvcc`,
with nvidia-nvvm, nvidia-cuda-runtime and nvidia-cuda-crt: the `cuda-build` extra), which install a
working nvcc under site-packages/nvidia/cu13. Compiling needs no GPU and no CUDA torch.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

CUDA_DIR = Path(__file__).with_name("cuda")
KERNELS = CUDA_DIR / "point_ops_cuda.cu"
BINDING = CUDA_DIR / "binding.cpp"
ARCHS = ("80", "90")  # A100; H100/H200 (each as SASS, plus sm_90 PTX for later chips)
NVCC_FLAGS = ("-O3", "-std=c++17", "--fmad=false", "-Xcompiler", "-fPIC")


def _wheel_roots() -> list[Path]:
    try:
        import nvidia  # namespace package of NVIDIA's wheels
    except ImportError:
        return []
    return [Path(p) / sub for p in nvidia.__path__ for sub in ("cu13", "cu12", "cuda_nvcc")]


def find_nvcc() -> Path | None:
    """The nvcc to use, or None."""
    candidates = [os.environ.get("RECON_SERVE_NVCC")]
    if os.environ.get("CUDA_HOME"):
        candidates.append(str(Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc"))
    candidates.append(shutil.which("nvcc"))
    candidates += [str(r / "bin" / "nvcc") for r in _wheel_roots()]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    return None


def gencode(archs=ARCHS) -> list[str]:
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    return flags + [f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}"]


def _run(cmd: list[str], timeout: int = 600) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-2000:]}")
    return time.perf_counter() - t0


def compile_object(source: Path, out: Path, *, include=(), extra=(), archs=ARCHS, nvcc: Path | None = None) -> float:
    """`nvcc -c source -o out` for `archs`; returns the seconds it took. Raises if nvcc is missing or fails."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set RECON_SERVE_NVCC or CUDA_HOME, or pip install the cuda-build extra)")
    cmd = [str(nvcc), "-c", *NVCC_FLAGS, *gencode(archs), f"-I{CUDA_DIR}", *(f"-I{i}" for i in include), *extra,
           str(source), "-o", str(out)]
    return _run(cmd)


def check_binding() -> float:
    """g++ -fsyntax-only binding.cpp against this torch's headers (CPU torch will do); returns the seconds."""
    from torch.utils.cpp_extension import include_paths

    if not shutil.which("g++"):
        raise FileNotFoundError("g++ not found")
    inc = [f"-I{p}" for p in include_paths()] + [f"-I{sysconfig.get_paths()['include']}", f"-I{CUDA_DIR}"]
    return _run(["g++", "-fsyntax-only", "-std=c++20", "-DTORCH_EXTENSION_NAME=recon_point_ops_cuda", *inc,
                 str(BINDING)])


if __name__ == "__main__":  # python -m recon_serve.ops.cuda_toolchain OUT_DIR: the whole compile check
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"nvcc: {find_nvcc()}")
    print(f"kernels: {compile_object(KERNELS, out_dir / 'point_ops_cuda.o'):.1f} s")
    print(f"binding: {check_binding():.1f} s")
