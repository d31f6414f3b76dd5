"""One ONNX graph per need: the global graph (no part head) for every endpoint but /v1/segment, the
parts graph (all outputs) for segment, the optional int8 global graph (the batcher's side: test_batcher.py).
A micro model with class and part heads, exported once per module."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from recon_serve.backends.ort_backend import OrtBackend
from recon_serve.export.onnx import export_onnx, fold_batchnorm, ort_session

N = 256  # the micro model's points


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from recon_serve.model.checkpoint import save_checkpoint
    from recon_serve.model.factory import create_model

    d = tmp_path_factory.mktemp("graphs")
    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=4)
    model.set_num_parts(3)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    save_checkpoint(d / "micro.pt", model.eval(), class_names=list("abcd"), extra={"part_names": ["p", "q", "r"]})
    return d, model.eval()


@pytest.fixture(scope="module")
def backend(micro):
    d, _ = micro
    b = OrtBackend(d / "micro.pt", d / "cache", threads=1)
    yield b
    b.close()


def _points(b: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(b, N, 3)).astype(np.float32)


def _params(path) -> int:
    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def test_global_graph_gives_the_full_graphs_numbers_without_the_part_head(micro, backend):
    d, model = micro
    sha = backend.path.name.split(".")[0]
    full, glob = d / "cache" / f"{sha}.parts" / "model.onnx", backend.path / "model.onnx"
    assert backend.path.name == f"{sha}.global"  # the cache key names the graph
    x = _points()
    want = dict(zip([o.name for o in ort_session(full, 1).get_outputs()], ort_session(full, 1).run(None, {"points": x})))
    got = backend.infer(x)
    assert set(got) == {"embedding", "logits", "shape_embedding"} and "part_logits" in want
    for k, v in got.items():
        np.testing.assert_allclose(v, want[k], atol=1e-5)
    # the part head's weights (its Linear layers) are not in the global graph: a classify runs none of it
    seg = sum(m.weight.numel() for m in model.seg_head.modules() if isinstance(m, torch.nn.Linear))
    assert _params(full) - _params(glob) >= seg
    assert len(onnx.load(str(glob)).graph.node) < len(onnx.load(str(full)).graph.node)
    # parts=True runs the all-outputs graph, whose numbers are torch's
    with torch.no_grad():
        eager = {k: v.numpy() for k, v in model(torch.from_numpy(x)).items()}
    parts = backend.infer(x, parts=True)
    assert set(parts) == set(eager)
    for k, v in parts.items():
        np.testing.assert_allclose(v, eager[k], atol=1e-5)


def test_batchnorm_is_folded_into_the_linear_layers(micro, backend, tmp_path):
    d, model = micro
    x = torch.from_numpy(_points())
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for n, m in folded.named_modules() if "patch_embed" not in n)
    with torch.no_grad():
        a, b = model(x), folded(x)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=0)
    def ops(path):
        return {n.op_type for n in onnx.load(str(path)).graph.node}

    assert "BatchNormalization" in ops(export_onnx(model, tmp_path / "plain.onnx", fold_bn=False))
    assert "BatchNormalization" not in ops(d / "cache" / f"{backend.path.name.split('.')[0]}.parts" / "model.onnx")


def test_a_repository_directory_gets_its_global_graph_at_load(micro, backend):
    d, _ = micro
    parts_dir = d / "cache" / f"{backend.path.name.split('.')[0]}.parts"
    b = OrtBackend(parts_dir, cache_dir=d / "unused", threads=1)  # a version dir: all-outputs model.onnx + card
    x = _points(2, seed=1)
    try:
        assert "part_logits" not in b.infer(x) and "part_logits" in b.infer(x, parts=True)
        for k, v in b.infer(x).items():
            np.testing.assert_allclose(v, backend.infer(x)[k], atol=1e-6)
    finally:
        b.close()
    embed_worker = OrtBackend(backend.path, cache_dir=backend.path, threads=1)  # a global cache entry, as embed opens it
    assert embed_worker.parts_session is None and set(embed_worker.infer(x)) == {"embedding", "logits", "shape_embedding"}
    assert not (d / "unused").exists()


def test_int8_global_graph_runs_and_follows_fp32(micro, backend):
    d, _ = micro
    q = OrtBackend(d / "micro.pt", d / "cache", threads=1, int8=True)
    try:
        assert q.path.name.endswith(".global-int8")
        assert json.loads((q.path / "model_card.json").read_text())["onnx"]["graph"] == "global-int8"
        def custom(path):
            return {n.op_type for n in onnx.load(str(path)).graph.node if n.domain == "recon_serve"}

        ops = {n.op_type for n in onnx.load(str(q.path / "model.onnx")).graph.node}
        assert "MatMulInteger" in ops and custom(q.path / "model.onnx") == custom(backend.path / "model.onnx")
        x = _points(8, seed=2)
        a, b = backend.infer(x), q.infer(x)
        for k in ("logits", "embedding", "shape_embedding"):
            assert np.corrcoef(a[k].ravel(), b[k].ravel())[0, 1] > 0.99, k
        assert "part_logits" in q.infer(x, parts=True)  # segment keeps the fp32 parts graph
    finally:
        q.close()


def test_eval_runs_through_the_onnx_backend(micro, backend):
    from recon_serve.evaluate import encode

    _, model = micro
    x = _points(5, seed=3)
    ref, got = encode(model, x), encode(model, x, backend=backend)
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-5)


def test_int8_setting():
    from recon_serve.backends import load_backend
    from recon_serve.settings import Settings

    assert Settings.from_env({"RECON_INT8": "1"}).int8 and not Settings.from_env({}).int8
    with pytest.raises(ValueError, match="int8"):
        load_backend(Settings(backend="torch", int8=True))
