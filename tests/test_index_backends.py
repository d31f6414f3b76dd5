"""One behaviour suite for both index backends: the FAISS ShapeIndex (a directory) and MilvusIndex
on Milvus Lite (the embedded engine from PyPI, the same client API as a Milvus cluster)."""
from __future__ import annotations

import numpy as np
import pytest

from recon_serve.errors import InvalidMetadata
from recon_serve.index import open_index
from recon_serve.index.store import VectorSizeMismatch

DIM, SHAPE_DIM = 8, 4
CARD = {"embedding_dim": DIM, "shape_embedding_dim": SHAPE_DIM}


@pytest.fixture(params=["faiss", "milvus"])
def location(request, tmp_path):
    if request.param == "milvus":
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
        return f"milvus://{tmp_path}/shapes.db?collection=test_shapes"
    return str(tmp_path / "index")


def _vectors(n, dim, seed):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _fill(index, n=30):
    metas = [{"cat": ["chair", "lamp", "table"][i % 3], "n": i, "flag": i % 2 == 0,
              **({"maybe": None} if i % 5 == 0 else {})} for i in range(n)]
    metas[1]["n"] = 1.0  # 1 and 1.0 are equal numbers; True is not 1
    metas[2]["quote"] = 'say "hi" \\ there'
    ids = [f"shape-{i}" for i in range(n)]
    index.add_many(ids, _vectors(n, DIM, 0), metas, "v1", _vectors(n, SHAPE_DIM, 1))
    return ids, metas


def test_writes_reads_and_order(location):
    with open_index(location, CARD, "v1") as index:
        ids, metas = _fill(index)
        assert len(index) == 30 and "shape-3" in index and "nope" not in index
        assert index.ids() == ids
        rec = index.get("shape-4")
        assert rec.metadata == metas[4] and rec.model_version == "v1" and rec.added_at > 0
        index.add("shape-0", _vectors(1, DIM, 5)[0], {"cat": "sofa"}, "v2", _vectors(1, SHAPE_DIM, 6)[0])  # upsert
        assert len(index) == 30 and index.ids()[-1] == "shape-0" and index.get("shape-0").metadata == {"cat": "sofa"}
        assert index.model_versions() == {"v1": 29, "v2": 1}
        v = _vectors(1, DIM, 5)[0]
        np.testing.assert_allclose(index.embedding("shape-0"), v / np.linalg.norm(v), atol=1e-6)
        assert index.remove("shape-1") and not index.remove("shape-1") and len(index) == 29
        assert index.get("shape-1") is None and index.embedding("shape-1") is None
        rows = list(index.export_rows(batch=7))
        assert sum(len(r[0]) for r in rows) == 29 and rows[0][4].shape[1] == SHAPE_DIM
    with open_index(location, CARD, "v1") as index:  # reopened: everything is still there
        assert len(index) == 29 and index.get("shape-0").metadata == {"cat": "sofa"}


def test_search_is_exact_cosine_in_either_field(location):
    with open_index(location, CARD, "v1") as index:
        _fill(index)
        text, shape = _vectors(30, DIM, 0), _vectors(30, SHAPE_DIM, 1)
        for field, data in (("text", text), ("shape", shape)):
            q = data[7] + 0.01
            hits = index.search(q, k=5, field=field)
            unit = data / np.linalg.norm(data, axis=1, keepdims=True)
            want = np.argsort(-(unit @ (q / np.linalg.norm(q))))[:5]
            assert [h.id for h in hits] == [f"shape-{i}" for i in want]
            assert hits[0].id == "shape-7" and hits[0].score == pytest.approx(float(unit[7] @ (q / np.linalg.norm(q))), abs=1e-5)
        two = index.search(text[:2], k=3)
        assert [h[0].id for h in two] == ["shape-0", "shape-1"]


@pytest.mark.parametrize("filter, want", [
    ({"cat": "lamp"}, {i for i in range(30) if i % 3 == 1}),
    ({"cat": ["lamp", "table"]}, {i for i in range(30) if i % 3}),
    ({"n": 1}, {1}),  # stored as 1.0
    ({"n": True}, set()),  # a bool is not a number
    ({"flag": True, "cat": "chair"}, {i for i in range(30) if i % 6 == 0}),
    ({"maybe": None}, {0, 5, 10, 15, 20, 25}),  # an explicit null, not a missing key
    ({"quote": 'say "hi" \\ there'}, {2}),
    ({"cat": []}, set()),
    ({"n": list(range(1000))}, set(range(30))),
    ({"missing": "x"}, set()),
])
def test_filters_match_exactly_as_the_faiss_index(location, filter, want):
    with open_index(location, CARD, "v1") as index:
        _fill(index)
        hits = index.search(_vectors(1, DIM, 9)[0], k=30, filter=filter)
        assert {int(h.id.split("-")[1]) for h in hits} == want


def test_bad_input_is_refused_before_anything_is_stored(location):
    with open_index(location, CARD, "v1") as index:
        with pytest.raises(ValueError):
            index.add("a", np.zeros(DIM), {}, "v1", np.ones(SHAPE_DIM))  # zero vector
        with pytest.raises(ValueError):
            index.add("a", np.ones(DIM + 1), {}, "v1", np.ones(SHAPE_DIM))
        with pytest.raises(InvalidMetadata):
            index.add("a", np.ones(DIM), {"x": float("nan")}, "v1", np.ones(SHAPE_DIM))
        with pytest.raises(ValueError):
            index.add("", np.ones(DIM), {}, "v1", np.ones(SHAPE_DIM))
        with pytest.raises(InvalidMetadata):
            index.search(np.ones(DIM), filter={"x": [[1]]})
        assert len(index) == 0
    with open_index(location, {"embedding_dim": DIM * 2, "shape_embedding_dim": SHAPE_DIM}, "v1") as index:
        assert index.fields == {"text": DIM, "shape": SHAPE_DIM}  # an existing index keeps its sizes
    # a model whose shape vectors have another size (a new default, say) is told how to move on
    with pytest.raises(VectorSizeMismatch, match=r"holds 4-d shape vectors, but this model makes 8-d ones: embed the library into a new index"):
        open_index(location, {"embedding_dim": DIM, "shape_embedding_dim": SHAPE_DIM * 2}, "v2")
