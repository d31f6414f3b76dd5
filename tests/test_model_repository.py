"""model_repository/ (tracked): its configs are Triton ModelConfig protobufs and exactly what the code
generates for the shipped default; its placeholder version folders are free for `recon-serve export`."""
import shutil
from pathlib import Path

import pytest

from recon_serve.export import triton_repo
from recon_serve.export.triton_repo import MODELS, ONNX_MODEL, PLACEHOLDER, PYTHON_MODEL, TRT_MODEL

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
from google.protobuf import text_format  # noqa: E402

REPO = Path(__file__).resolve().parents[1] / "model_repository"


def _parse(text):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def generated():
    return triton_repo.default_configs()


def test_tracked_configs_are_what_the_code_generates(generated):
    assert sorted(p.parent.name for p in REPO.glob("*/config.pbtxt")) == sorted(MODELS)
    for name, text in generated.items():
        assert (REPO / name / "config.pbtxt").read_text() == text, f"{name}: regenerate with triton_repo.default_configs()"
        assert (REPO / name / "1" / PLACEHOLDER).is_file()


def test_tracked_configs_parse_as_triton_model_configs():
    cfgs = {m: _parse((REPO / m / "config.pbtxt").read_text()) for m in MODELS}
    assert cfgs[ONNX_MODEL].platform == "onnxruntime_onnx" and cfgs[PYTHON_MODEL].backend == "python"
    assert cfgs[TRT_MODEL].platform == "tensorrt_plan"
    assert list(cfgs[ONNX_MODEL].model_operations.op_library_filename) == ["/models/recon_onnx/1/libpoint_ops.so"]
    assert cfgs[TRT_MODEL].instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    outputs = {m: [(o.name, list(o.dims)) for o in c.output] for m, c in cfgs.items()}
    assert outputs[ONNX_MODEL] == outputs[PYTHON_MODEL] == outputs[TRT_MODEL]
    assert [n for n, _ in outputs[TRT_MODEL]] == ["embedding", "logits", "part_logits", "shape_embedding"]
    for c in cfgs.values():
        assert c.max_batch_size == 64 and [(i.name, list(i.dims)) for i in c.input] == [("points", [-1, 3])]


def test_gitignore_keeps_configs_and_placeholders_only():
    import subprocess

    root = REPO.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["model_repository/recon_onnx/config.pbtxt", "model_repository/recon_trt/1/.gitkeep",
             "model_repository/recon_onnx/1/model.onnx", "model_repository/recon_python/1/model.py",
             "model_repository/recon_python/1/checkpoint.pt", "model_repository/recon_trt/1/model.plan",
             "model_repository/recon_trt/1/libpoint_ops_trt.so", "model_repository/recon_python/2/model_card.json",
             "model_repository/deployments.json"]
    r = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=root, capture_output=True, text=True)
    assert r.stdout.split() == paths[2:]


def test_placeholder_versions_are_free(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    assert triton_repo.next_version(repo) == 1
    assert triton_repo.version_dirs(repo / PYTHON_MODEL) == []
    with pytest.raises(FileNotFoundError):
        triton_repo.latest_version(repo / ONNX_MODEL)
    (repo / PYTHON_MODEL / "1" / "model.onnx").write_bytes(b"")
    assert triton_repo.next_version(repo) == 2 and triton_repo.latest_version(repo / PYTHON_MODEL).name == "1"


@pytest.mark.slow
def test_export_into_a_copy_of_the_tracked_repository_keeps_its_configs(tmp_path):
    """The shipped default exported as compose.yaml does it (--deploy-root /models) rewrites nothing tracked,
    and the bundled CPU Triton serves the python model from it."""
    import numpy as np

    from recon_serve.ops import custom_ops_library

    if custom_ops_library() is None:
        pytest.skip("the custom-op library does not build here: the tracked configs are the custom-op flavour")
    from recon_serve.export.triton_server import TritonServer, triton_python_env

    try:
        env = triton_python_env()
    except Exception as e:  # noqa: BLE001
        env, why = None, e
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    summary = triton_repo.write_model_repository(None, repo, deploy_root="/models",
                                                 python_site_packages=str(env.site_packages) if env else None)
    assert summary["version"] == 1 and summary["mode"] == "custom_op"
    assert summary["tensorrt"]["plan"] or "not built" in summary["tensorrt"]["note"]
    for m in MODELS:
        assert (repo / m / "config.pbtxt").read_text() == (REPO / m / "config.pbtxt").read_text(), m
    assert (repo / ONNX_MODEL / "1" / "libpoint_ops.so").is_file() and (repo / TRT_MODEL / "1" / "model_card.json").is_file()
    if env is None:
        pytest.skip(f"Triton venv could not be created: {why}")
    import tritonclient.http as http

    x = (np.random.default_rng(0).random((2, 1024, 3), dtype=np.float32) * 2 - 1)
    with TritonServer(repo, env=env) as t:
        client = http.InferenceServerClient(t.http_url)
        assert client.is_model_ready(PYTHON_MODEL)
        inp = http.InferInput("points", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = client.infer(PYTHON_MODEL, [inp])
        assert result.as_numpy("embedding").shape == (2, 384) and result.as_numpy("logits").shape == (2, 157)
