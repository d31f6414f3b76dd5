"""ONNX export: scan FPS parity, pure and custom-op graphs in ONNX Runtime, C++ kernels against the reference."""
import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from onnx import TensorProto, helper  # noqa: E402

from recon_serve.export.onnx import export_onnx, ort_session  # noqa: E402
from recon_serve.geometry.group import farthest_point_sample, farthest_point_sample_scan, group, grouping_mode, knn  # noqa: E402
from recon_serve.model.factory import create_model  # noqa: E402
from recon_serve.ops import custom_ops_library  # noqa: E402

SHAPES = [(1, 256), (1, 512), (3, 256), (3, 512)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("micro", num_classes=10)[0].eval()


@pytest.fixture(scope="module")
def ops_lib():
    lib = custom_ops_library()
    if lib is None:
        pytest.skip("custom-op library could not be built (needs apt-get/dpkg-deb, Debian trixie reachable, g++; see log)")
    return lib


@pytest.fixture(scope="module")
def pure_path(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "pure.onnx", mode="pure")


@pytest.fixture(scope="module")
def custom_path(model, ops_lib, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "custom.onnx", mode="custom_op")


def _clouds():
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(B, N, 3, generator=g) * 2 - 1) for B, N in SHAPES]


def _assert_matches_eager(model, path):
    sess = ort_session(path, threads=2)
    assert [o.name for o in sess.get_outputs()] == ["embedding", "logits", "shape_embedding"]
    for x in _clouds():
        with torch.no_grad():
            ref = model(x)
        emb, logits, shape = sess.run(None, {"points": x.numpy()})
        assert emb.shape == tuple(ref["embedding"].shape) and logits.shape == (x.shape[0], 10)
        np.testing.assert_allclose(emb, ref["embedding"].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(logits, ref["logits"].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(shape, ref["shape_embedding"].numpy(), atol=1e-4, rtol=0)


def test_scan_fps_equals_reference():
    g = torch.Generator().manual_seed(0)
    for B, N, npoint in [(1, 64, 64), (3, 1024, 64), (2, 500, 17)]:
        x = torch.rand(B, N, 3, generator=g)
        assert torch.equal(farthest_point_sample_scan(x, npoint), farthest_point_sample(x, npoint))
    grid = torch.randint(0, 3, (2, 200, 3), generator=g).float()  # many tied distances
    assert torch.equal(farthest_point_sample_scan(grid, 20), farthest_point_sample(grid, 20))


def test_grouping_mode_switches_and_restores():
    x = torch.rand(2, 128, 3)
    ref = group(x, 8, 4)
    for mode in ("scan", "custom_op"):
        with grouping_mode(mode):
            assert all(torch.equal(a, b) for a, b in zip(group(x, 8, 4), ref))
    with pytest.raises(ValueError):
        with grouping_mode("nope"):
            pass


def test_pure_export_matches_eager(model, pure_path):
    _assert_matches_eager(model, pure_path)


def test_pure_graph_loops_instead_of_unrolling(model, pure_path):
    graph = onnx.load(str(pure_path)).graph
    loops = [n for n in graph.node if n.op_type in ("Scan", "Loop")]
    assert len(loops) == 1
    body = [n.op_type for a in loops[0].attribute if a.type == onnx.AttributeProto.GRAPH for n in a.g.node]
    assert {"ArgMax", "Min"} <= set(body)
    # each unrolled FPS step would add a Min and an ArgMax to the main graph
    assert not any(n.op_type in ("ArgMax", "Min") for n in graph.node)
    assert {o.domain for o in onnx.load(str(pure_path)).opset_import} <= {"", "ai.onnx"}


def test_custom_op_export_has_recon_serve_nodes(custom_path):
    proto = onnx.load(str(custom_path))
    nodes = {n.op_type: n for n in proto.graph.node if n.domain == "recon_serve"}
    assert set(nodes) == {"FarthestPointSample", "KNN"}
    attrs = {n: {a.name: a.i for a in node.attribute} for n, node in nodes.items()}
    assert attrs == {"FarthestPointSample": {"npoint": 16}, "KNN": {"k": 16}}
    assert not any(n.op_type in ("Scan", "Loop", "TopK") for n in proto.graph.node)


def _single_op_session(lib, op, inputs, out_rank, **attrs):
    node = helper.make_node(op, inputs, ["idx"], domain="recon_serve", **attrs)
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", f"{n}_N", 3]) for n in inputs],
        [helper.make_tensor_value_info("idx", TensorProto.INT64, [None] * out_rank)],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("recon_serve", 1)])
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(lib))
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def test_kernels_equal_reference_exactly(ops_lib):
    fps = _single_op_session(ops_lib, "FarthestPointSample", ["points"], 2, npoint=64)
    nn_ = _single_op_session(ops_lib, "KNN", ["points", "query"], 3, k=32)
    g = torch.Generator().manual_seed(2)
    for B, N in [(1, 64), (3, 1024), (2, 2000)]:
        x = torch.randn(B, N, 3, generator=g)
        idx = fps.run(None, {"points": x.numpy()})[0]
        np.testing.assert_array_equal(idx, farthest_point_sample(x, 64).numpy())
        q = torch.cat([x[:, :5], torch.randn(B, 40, 3, generator=g)], 1)  # queries on and off the cloud
        np.testing.assert_array_equal(nn_.run(None, {"points": x.numpy(), "query": q.numpy()})[0], knn(32, x, q).numpy())


def test_knn_kernel_breaks_ties_by_lower_index(ops_lib):
    """torch.topk leaves tie order unspecified; the kernel follows ONNX TopK (lower index first)."""
    nn_ = _single_op_session(ops_lib, "KNN", ["points", "query"], 3, k=32)
    x = torch.randint(0, 4, (2, 300, 3), generator=torch.Generator().manual_seed(3)).float()
    q = x[:, :20].contiguous()
    x[0, 5:300:7] = float("nan")  # NaN distances go last, by index (torch.sort's order too)
    d = ((q[:, :, None] - x[:, None]) ** 2).sum(-1)
    expect = torch.sort(d, dim=-1, stable=True).indices[..., :32]
    np.testing.assert_array_equal(nn_.run(None, {"points": x.numpy(), "query": q.numpy()})[0], expect.numpy())
    few = x[:, :40].contiguous()  # fewer finite points than k in cloud 0: NaN rows fill the tail
    few[0, 3:] = float("nan")
    expect = torch.sort(((q[:, :, None] - few[:, None]) ** 2).sum(-1), dim=-1, stable=True).indices[..., :32]
    np.testing.assert_array_equal(nn_.run(None, {"points": few.numpy(), "query": q.numpy()})[0], expect.numpy())


def test_custom_op_export_matches_eager(model, custom_path):
    _assert_matches_eager(model, custom_path)


def test_seg_head_exports_without_dropping_its_epsilon(tmp_path):
    """Guards optimize=False: onnxscript's optimizer turns the head's `d + 1e-8` into `d` (NaN at centres).
    The head has the local descriptor too, so its kNN and statistics export as well."""
    torch.manual_seed(0)
    seg = create_model("micro", num_classes=10, num_parts=5, seg_local_k=8)[0].eval()
    sess = ort_session(export_onnx(seg, tmp_path / "seg.onnx", mode="pure"), threads=2)
    x = torch.rand(2, 256, 3, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        ref = seg(x)
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"points": x.numpy()})))
    assert list(out) == ["embedding", "logits", "part_logits", "shape_embedding"]
    for name, value in out.items():
        np.testing.assert_allclose(value, ref[name].numpy(), atol=1e-4, rtol=0)
