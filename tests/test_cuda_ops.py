"""The CUDA path: kernels and TensorRT plugins compile without a GPU (nvcc from PyPI), the CPU path is
untouched, and (gpu marker, skipped without CUDA) the kernels and the CUDA backend match the reference."""
import shutil
import subprocess

import pytest
import torch

from recon_serve.geometry import group
from recon_serve.ops import cuda_ops, cuda_toolchain

NVCC = cuda_toolchain.find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (pip install the cuda-build extra, or set CUDA_HOME)")
CUDA = torch.cuda.is_available()
def gpu(f):
    """gpu marker, and a skip with the reason where there is no CUDA device."""
    return pytest.mark.gpu(pytest.mark.skipif(not CUDA, reason="needs a CUDA device")(f))


@needs_nvcc
def test_kernels_compile_without_a_gpu(tmp_path):
    cuda_toolchain.compile_object(cuda_toolchain.KERNELS, tmp_path / "k.o")
    syms = subprocess.run(["nm", str(tmp_path / "k.o")], capture_output=True, text=True).stdout
    for name in ("recon_fps_launch", "recon_knn_launch", "recon_fps_workspace_floats", "recon_cuda_error_string"):
        assert f" T {name}" in syms, name  # the C ABI, unmangled


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
def test_torch_binding_compiles_against_cpu_torch():
    cuda_toolchain.check_binding()  # torch/extension.h only: no ATen CUDA headers needed


@needs_nvcc
def test_tensorrt_plugins_compile_and_link(tmp_path, monkeypatch):
    from recon_serve.export.tensorrt import build

    include = build.trt_include()
    if include is None:
        pytest.skip("TensorRT headers not found: set RECON_SERVE_TRT_INCLUDE to TensorRT's include/ (github.com/NVIDIA/TensorRT)")
    times = build.compile_check(tmp_path)
    assert times["tensorrt_headers"].count(".") == 2
    # Link against a stub libnvinfer (nothing to run here): the .so must export no torch and need only TensorRT.
    stub = "void* getPluginRegistry(void) { return 0; }\nvoid* getLogger(void) { return 0; }\n"
    subprocess.run(["gcc", "-shared", "-fPIC", "-x", "c", "-", "-o", str(tmp_path / "libnvinfer.so")], input=stub,
                   text=True, check=True)
    monkeypatch.setenv("RECON_SERVE_TRT_INCLUDE", str(include))
    monkeypatch.setenv("RECON_SERVE_TRT_LIB", str(tmp_path))
    monkeypatch.setenv("RECON_SERVE_CACHE", str(tmp_path / "cache"))
    lib = build.build_plugin_library(archs=("90",))
    dyn = subprocess.run(["nm", "-D", str(lib)], capture_output=True, text=True).stdout
    assert " U getPluginRegistry" in dyn and " T recon_knn_launch" in dyn
    assert "libnvinfer.so" in subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True).stdout


def test_cpu_tensors_take_the_reference_path(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the CUDA kernels were asked for a CPU tensor")

    monkeypatch.setattr(cuda_ops, "farthest_point_sample", boom)
    monkeypatch.setattr(cuda_ops, "knn", boom)
    x = torch.rand(2, 256, 3, generator=torch.Generator().manual_seed(0))
    assert group._cuda_ops(x) is None
    assert torch.equal(group.fps_indices(x, 32, skip_origin=True), group.farthest_point_sample(x, 32, skip_origin=True))
    centres = group.gather_points(x, group.fps_indices(x, 32))
    assert torch.equal(group.knn_indices(16, x, centres), group.knn(16, x, centres))


@pytest.mark.skipif(CUDA, reason="checks the no-CUDA answer")
def test_extension_is_not_built_without_cuda():
    assert cuda_ops.extension() is None and "CUDA unavailable" in cuda_ops.load_error()
    assert not cuda_ops.supports(torch.zeros(1, 3))


# --- on a GPU (bench/gpu_check.sh runs these, and the same checks without pytest) -------------------------

@pytest.fixture(scope="module")
def ext():
    if cuda_ops.extension() is None:
        pytest.fail(f"CUDA present but the extension did not build: {cuda_ops.load_error()}")
    return cuda_ops.extension()


@gpu
@pytest.mark.parametrize("N,npoint", [(1024, 64), (1024, 512), (8192, 512)])
@pytest.mark.parametrize("skip_origin", [False, True])
@pytest.mark.parametrize("force_global", [False, True])
def test_cuda_fps_matches_reference(ext, N, npoint, skip_origin, force_global):
    from recon_serve.ops.cuda_parity import check_fps

    r = check_fps(N, npoint, skip_origin=skip_origin, force_global=force_global)
    assert r["ok"], r


@gpu
@pytest.mark.parametrize("N,k", [(1024, 32), (8192, 32), (16384, 64)])
def test_cuda_knn_matches_reference(ext, N, k):
    from recon_serve.ops.cuda_parity import check_knn

    r = check_knn(N, 512, k)
    assert r["identical"] and r["ok"], r
    tied = check_knn(N, 512, k, duplicates=0.05)
    assert tied["ok"], tied  # duplicated points: equal distances, torch.topk's tie order is its own


@gpu
@pytest.mark.parametrize("bf16", [False, True])
def test_cuda_backend_matches_cpu(ext, bf16):
    from recon_serve.model.factory import DEFAULT_CHECKPOINT
    from recon_serve.ops.cuda_parity import check_backend

    r = check_backend(DEFAULT_CHECKPOINT, batch=4, bf16=bf16)
    assert r["kernels"] and r["ok"], r


@gpu
def test_extension_agrees_on_the_k_limit(ext):
    assert ext.max_k == cuda_ops.MAX_K


def test_settings_carry_device_and_bf16():
    from recon_serve.settings import Settings

    s = Settings.from_env({"RECON_DEVICE": "cuda:1", "RECON_BF16": "1"})
    assert (s.device, s.bf16) == ("cuda:1", True)
    assert (Settings.from_env({}).device, Settings.from_env({}).bf16) == ("cpu", False)
    with pytest.raises(ValueError, match="boolean"):
        Settings.from_env({"RECON_BF16": "maybe"})


def test_bf16_is_refused_off_cuda():
    from recon_serve.backends.torch_backend import TorchBackend
    from recon_serve.model.factory import DEFAULT_CHECKPOINT

    with pytest.raises(ValueError, match="CUDA"):
        TorchBackend(DEFAULT_CHECKPOINT, device="cpu", bf16=True)
