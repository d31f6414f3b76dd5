"""Triton model repository: layout, config.pbtxt through Triton's own protobuf, model card, the real bundled
tritonserver answering over HTTP and gRPC (the `export` / `check-export` CLI: README's commands, tests/test_docs_export.py)."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

from google.protobuf import text_format  # noqa: E402

from recon_serve.export.onnx import ort_session  # noqa: E402
from recon_serve.export.triton_repo import (  # noqa: E402
    LIBRARY_NAME, ONNX_MODEL, PYTHON_MODEL, latest_version, next_version, write_model_repository,
)
from recon_serve.export.triton_server import TritonServer, triton_python_env  # noqa: E402
from recon_serve.model.checkpoint import save_checkpoint  # noqa: E402
from recon_serve.model.factory import create_model  # noqa: E402

CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=10)
    path = tmp_path_factory.mktemp("ckpt") / "micro.pt"
    save_checkpoint(path, model.eval(), class_names=CLASSES, teacher="all-MiniLM-L6-v2", metrics={"oa": 12.5})
    return path


@pytest.fixture(scope="module")
def triton_env():
    """The server's own venv (numpy<2), or None with the reason kept for the tests that need it."""
    try:
        return triton_python_env()
    except Exception as e:  # noqa: BLE001
        return e


@pytest.fixture(scope="module")
def repo(checkpoint, triton_env, tmp_path_factory):
    site = None if isinstance(triton_env, Exception) else str(triton_env.site_packages)
    out = tmp_path_factory.mktemp("repo") / "models"
    summary = write_model_repository(checkpoint, out, python_site_packages=site)
    return out, summary


@pytest.fixture(scope="module")
def server(repo, triton_env):
    if isinstance(triton_env, Exception):
        pytest.skip(f"Triton venv could not be created: {triton_env}")
    with TritonServer(repo[0], env=triton_env) as t:
        yield t


def _parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_layout_and_both_configs_parse(repo):
    out, summary = repo
    assert summary["version"] == 1
    lib = summary["mode"] == "custom_op"
    for name in (ONNX_MODEL, PYTHON_MODEL):
        files = {p.name for p in (out / name / "1").iterdir()}
        assert {"model.onnx", "model_card.json"} <= files
        assert (LIBRARY_NAME in files) == lib
    assert (out / PYTHON_MODEL / "1" / "model.py").is_file()
    for name in (ONNX_MODEL, PYTHON_MODEL):
        cfg = _parse(out / name / "config.pbtxt")
        assert cfg.name == name and cfg.max_batch_size == 64
        assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("points", model_config_pb2.TYPE_FP32, [-1, 3])]
        assert [(o.name, list(o.dims)) for o in cfg.output] == [("embedding", [384]), ("logits", [10]),
                                                                  ("shape_embedding", [48])]
        assert all(o.data_type == model_config_pb2.TYPE_FP32 for o in cfg.output)
        assert list(cfg.dynamic_batching.preferred_batch_size) and cfg.dynamic_batching.max_queue_delay_microseconds > 0
        assert [(g.kind, g.count) for g in cfg.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 1)]
    onnx_cfg, py_cfg = _parse(out / ONNX_MODEL / "config.pbtxt"), _parse(out / PYTHON_MODEL / "config.pbtxt")
    assert onnx_cfg.platform == "onnxruntime_onnx" and py_cfg.backend == "python"
    libs = list(onnx_cfg.model_operations.op_library_filename)
    assert libs == ([str(out / ONNX_MODEL / "1" / LIBRARY_NAME)] if lib else [])
    assert py_cfg.parameters["intra_op_num_threads"].string_value == "2"


def test_model_card_describes_the_checkpoint(repo, checkpoint):
    out, summary = repo
    cards = [json.loads((out / m / "1" / "model_card.json").read_text()) for m in (ONNX_MODEL, PYTHON_MODEL)]
    assert cards[0]["onnx"] == cards[1]["onnx"]
    card = cards[1]
    assert card["class_names"] == CLASSES and card["part_names"] == []
    assert card["normalisation"].startswith("centre on mean") and card["num_points"] == 256
    assert card["embedding_dim"] == 384 and card["config_name"] == "micro" and card["metrics"] == {"oa": 12.5}
    assert card["source_checkpoint"]["path"] == str(checkpoint) and len(card["source_checkpoint"]["sha256"]) == 64
    assert card["onnx"]["mode"] == summary["mode"]
    assert ("recon_serve" in card["onnx"]["domains"]) == (summary["mode"] == "custom_op")


def test_versions_count_up_and_never_overwrite(tmp_path, checkpoint):
    for d in ("recon_onnx/1", "recon_python/3", "recon_python/notes"):
        (tmp_path / d).mkdir(parents=True)
    assert next_version(tmp_path) == 4 and latest_version(tmp_path / "recon_python").name == "3"
    with pytest.raises(FileExistsError):
        write_model_repository(checkpoint, tmp_path, version=1)


def _clouds():
    return (torch.rand(3, 256, 3, generator=torch.Generator().manual_seed(5)) * 2 - 1).numpy()


def _expected(repo, x):
    sess = ort_session(repo[0] / PYTHON_MODEL / "1" / "model.onnx", threads=2)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"points": x})))


def test_bundled_triton_serves_python_model_over_http(server, repo):
    import tritonclient.http as http

    x = _clouds()
    client = http.InferenceServerClient(server.http_url)
    assert client.is_model_ready(PYTHON_MODEL) and not client.is_model_ready(ONNX_MODEL)
    inp = http.InferInput("points", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    outs = [http.InferRequestedOutput(n, binary_data=True) for n in ("embedding", "logits", "shape_embedding")]
    result = client.infer(PYTHON_MODEL, [inp], outputs=outs)
    for name, want in _expected(repo, x).items():
        got = result.as_numpy(name)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_bundled_triton_serves_python_model_over_grpc(server, repo):
    import tritonclient.grpc as grpc

    x = _clouds()
    client = grpc.InferenceServerClient(server.grpc_url)
    meta = client.get_model_metadata(PYTHON_MODEL, as_json=True)
    assert [o["name"] for o in meta["outputs"]] == ["embedding", "logits", "shape_embedding"]
    inp = grpc.InferInput("points", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(PYTHON_MODEL, [inp])
    for name, want in _expected(repo, x).items():
        np.testing.assert_allclose(result.as_numpy(name), want, atol=1e-5, rtol=0)
    bad = grpc.InferInput("points", [1, 4, 3], "FP32")  # fewer points than groups: an error reply, server stays up
    bad.set_data_from_numpy(np.zeros((1, 4, 3), np.float32))
    with pytest.raises(Exception):
        client.infer(PYTHON_MODEL, [bad])
    assert client.is_server_live() and client.is_model_ready(PYTHON_MODEL)


def test_server_start_failure_reports_the_log(repo, triton_env):
    if isinstance(triton_env, Exception):
        pytest.skip(f"Triton venv could not be created: {triton_env}")
    with pytest.raises(RuntimeError, match="log tail"):
        TritonServer(repo[0], models=["no_such_model"], env=triton_env, ready_timeout=60).start()


# `export` then `check-export` on the shipped default: README's commands, run by tests/test_docs_export.py.


def test_auto_falls_back_to_pure_onnx_and_says_so(tmp_path, checkpoint, monkeypatch):
    import recon_serve.ops

    monkeypatch.setattr(recon_serve.ops, "custom_ops_library", lambda: None)
    summary = write_model_repository(checkpoint, tmp_path, mode="auto")
    assert summary["mode"] == "pure" and "could not be built" in summary["note"]
    text = (tmp_path / ONNX_MODEL / "config.pbtxt").read_text()
    assert "# pure ONNX graph" in text and not _parse(tmp_path / ONNX_MODEL / "config.pbtxt").HasField("model_operations")
    assert not any(p.name == LIBRARY_NAME for p in tmp_path.rglob("*"))
    with pytest.raises(RuntimeError, match="custom-op library unavailable"):
        write_model_repository(checkpoint, tmp_path, mode="custom_op")


def test_triton_follows_deploy_and_rollback(checkpoint, triton_env, tmp_path):
    """The live version is Triton's own version_policy: model-control load switches it both ways."""
    import tritonclient.http as http

    from recon_serve.backends.triton_backend import TritonBackend, load_live_version
    from recon_serve.export import versions

    if isinstance(triton_env, Exception):
        pytest.skip(f"Triton venv could not be created: {triton_env}")
    site = str(triton_env.site_packages)
    torch.manual_seed(1)
    other, _ = create_model("micro", num_classes=2)
    save_checkpoint(tmp_path / "other.pt", other.eval(), class_names=["a", "b"])
    repo = tmp_path / "repo"
    versions.deploy(checkpoint, repo, python_site_packages=site)
    versions.deploy(tmp_path / "other.pt", repo, python_site_packages=site)
    x = _clouds()
    with TritonServer(repo, env=triton_env) as t:
        client = http.InferenceServerClient(t.http_url)
        assert client.is_model_ready(PYTHON_MODEL, "2") and not client.is_model_ready(PYTHON_MODEL, "1")
        new = TritonBackend(t.http_url, repository=repo)
        assert new.model_card["class_names"] == ["a", "b"] and new.infer(x)["logits"].shape == (3, 2)
        versions.rollback(repo)
        load_live_version(t.http_url)
        assert client.is_model_ready(PYTHON_MODEL, "1") and not client.is_model_ready(PYTHON_MODEL, "2")
        old = TritonBackend(t.http_url, repository=repo)
        assert old.model_card["class_names"] == CLASSES
        got = old.infer(x)
        for name, want in _expected((repo,), x).items():
            np.testing.assert_allclose(got[name], want, atol=1e-5, rtol=0)


def test_check_export_says_why_the_plan_was_not_compared(repo):
    """Without a plan (no TensorRT here) check-export's tensorrt row names what is missing, not a figure."""
    from recon_serve.export.check import _plan_check

    out, summary = repo
    row = _plan_check(out, "1", np.zeros((1, 256, 3), np.float32), {})
    if summary["tensorrt"]["plan"]:
        pytest.skip("a plan was built here: test_plan_matches_torch compares it")
    assert "max_abs_diff" not in row and "recon_trt/1/model.plan" in row["skipped"]


@pytest.mark.gpu
def test_plan_matches_torch(repo, checkpoint):
    """Where TensorRT and a GPU are: check-export runs the plan and compares it with torch."""
    from recon_serve.export.check import check_export
    from recon_serve.export.tensorrt.build import tensorrt_available

    why = tensorrt_available()
    if why or not repo[1]["tensorrt"]["plan"]:
        pytest.skip(f"no TensorRT plan to compare: {why or repo[1]['tensorrt']['note']}")
    row = check_export(repo[0], checkpoint)["runtimes"]["tensorrt"]
    assert row["max_abs_diff"] < 1e-3, row
