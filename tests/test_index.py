"""ShapeIndex: search correctness, upsert/remove, exact filters, persistence and crash recovery."""
import threading

import faiss
import numpy as np
import pytest

from recon_serve.index import ShapeIndex
from recon_serve.index.store import INDEX_FILE


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def random_unit(n, dim, seed=0):
    return unit(np.random.default_rng(seed).standard_normal((n, dim)))


def hit_ids(hits):
    return [h.id for h in hits]


@pytest.fixture
def index(tmp_path):
    ix = ShapeIndex(tmp_path / "ix", dim=4, model_version="v1")
    yield ix
    ix.close()


def test_search_ranks_by_cosine(index):
    index.add("a", [1, 0, 0, 0])
    index.add("b", [3, 3, 0, 0])  # not unit length: stored normalised, cosine 0.707 to x
    index.add("c", [0, 1, 0, 0])
    index.add("d", [-1, 0, 0, 0])
    hits = index.search([1, 0.1, 0, 0], k=4)
    assert hit_ids(hits) == ["a", "b", "c", "d"]
    q = unit([1, 0.1, 0, 0])
    assert [h.score for h in hits] == pytest.approx([q[0], q[0] * 0.5**0.5 + q[1] * 0.5**0.5, q[1], -q[0]], abs=1e-6)
    batch = index.search(np.array([[0, 1, 0, 0], [-1, 0, 0, 0]]), k=1)
    assert [hit_ids(h) for h in batch] == [["c"], ["d"]]
    assert hit_ids(index.search([1, 0, 0, 0], k=50)) == ["a", "b", "c", "d"]  # k beyond size


def test_upsert_replaces_vector_and_metadata(index):
    index.add("x", [1, 0, 0, 0], {"v": 1})
    index.add("y", [0, 0, 1, 0])
    index.add("x", [0, 1, 0, 0], {"v": 2}, model_version="v2")
    assert len(index) == 2
    top = index.search([0, 1, 0, 0], k=1)[0]
    assert (top.id, top.metadata) == ("x", {"v": 2}) and top.score == pytest.approx(1.0)
    assert all(h.score < 0.5 for h in index.search([1, 0, 0, 0], k=2))  # old vector gone
    assert index.get("x").model_version == "v2"
    np.testing.assert_allclose(index.embedding("x"), [0, 1, 0, 0])


def test_remove(index):
    index.add_many(["a", "b", "c"], np.eye(4)[:3], [{"i": 0}, {"i": 1}, {"i": 2}])
    assert index.remove("b") is True
    assert index.remove("b") is False
    assert len(index) == 2 and "b" not in index and index.get("b") is None and index.embedding("b") is None
    assert "b" not in hit_ids(index.search([0, 1, 0, 0], k=10))
    assert "b" not in hit_ids(index.search([0, 1, 0, 0], k=10, filter={"i": [0, 1, 2]}))


def test_filter_is_exact(tmp_path):
    dim = 16
    ix = ShapeIndex(tmp_path / "ix", dim=dim)
    query = unit(np.eye(dim)[0])
    near = unit(query + 0.05 * random_unit(500, dim, seed=1))  # 500 closer, unfiltered
    ix.add_many([f"near/{i}" for i in range(500)], near, [{"cat": "chair"}] * 500)
    ix.add("rare/best", unit(query + 1.0 * np.eye(dim)[1]), {"cat": "lamp", "ok": True})
    ix.add("rare/worse", unit(query + 3.0 * np.eye(dim)[2]), {"cat": "lamp", "ok": True})
    ix.add("rare/wrong-type", unit(query + 0.5 * np.eye(dim)[3]), {"cat": "lamp", "ok": 1})

    hits = ix.search(query, k=1, filter={"cat": "lamp", "ok": True})
    assert hit_ids(hits) == ["rare/best"]  # found although 500 closer shapes fail the filter
    hits = ix.search(query, k=10, filter={"cat": "lamp"})
    assert hit_ids(hits) == ["rare/wrong-type", "rare/best", "rare/worse"]
    assert all(h.metadata["cat"] == "lamp" for h in hits)
    hits = ix.search(query, k=600, filter={"cat": ["lamp", "chair"]})
    assert len(hits) == 503 and hits[0].id.startswith("near/")
    assert ix.search(query, k=5, filter={"cat": "sofa"}) == []
    assert ix.search(query, k=5, filter={"cat": []}) == []
    assert ix.search(query, k=5, filter={"missing": None}) == []
    with pytest.raises(ValueError):
        ix.search(query, filter={"cat": {"nested": 1}})
    ix.close()


def test_filters_follow_upserts_and_removes_and_old_indexes_gain_tags(tmp_path):
    """Filters read the tags table the triggers keep; an index written before it is backfilled on open."""
    import sqlite3

    dim = 8
    path = tmp_path / "ix"
    vecs = random_unit(6, dim, seed=3)
    ix = ShapeIndex(path, dim=dim)
    ix.add_many([f"s{i}" for i in range(6)], vecs,
                [{"cat": "a", "n": 1}, {"cat": "a", "n": 1.0}, {"cat": "b", "n": True}, {"cat": "b", "n": None},
                 {"cat": "a", "n": "1"}, {"cat": ["a"], "n": 2}])
    ix.add("s1", vecs[1], {"cat": "b", "n": 1})  # upsert moves s1 from a to b
    ix.remove("s0")
    match = lambda f: sorted(h.id for h in ix.search(vecs[0], k=10, filter=f))  # noqa: E731
    assert match({"cat": "a"}) == ["s4"]  # a list value never equals a scalar
    assert match({"cat": "b", "n": 1}) == ["s1"]  # True and "1" are other JSON types
    assert match({"cat": ["a", "b"], "n": [None, True]}) == ["s2", "s3"]
    ix.close()

    conn = sqlite3.connect(path / "shapes.sqlite")  # as an index from before the tags table
    conn.executescript("DROP TRIGGER shapes_tag; DROP TRIGGER shapes_untag; DROP TRIGGER shapes_retag; "
                       "DROP TABLE tags; PRAGMA user_version = 0;")
    conn.close()
    ix = ShapeIndex.open(path)
    assert match({"cat": "b", "n": 1}) == ["s1"] and match({"n": 2}) == ["s5"]
    ix.close()


def test_persistence_across_reopen(tmp_path):
    path = tmp_path / "ix"
    vectors = random_unit(100, 8, seed=2)
    queries = random_unit(5, 8, seed=3)
    with ShapeIndex(path, dim=8, model_version="m1", exact_limit=1000, ef_search=32) as ix:
        ix.add_many([f"s{i}" for i in range(100)], vectors, [{"i": i} for i in range(100)])
        before = ix.search(queries, k=5)
        before_filtered = ix.search(queries, k=5, filter={"i": list(range(0, 100, 3))})
    ix = ShapeIndex.open(path)
    assert (ix.dim, ix.settings.exact_limit, ix.settings.ef_search) == (8, 1000, 32)
    assert len(ix) == 100 and ix.model_versions() == {"m1": 100}
    assert ix.search(queries, k=5) == before
    assert ix.search(queries, k=5, filter={"i": list(range(0, 100, 3))}) == before_filtered
    assert ix.get("s7").metadata == {"i": 7}
    with pytest.raises(RuntimeError):  # one writer per directory
        ShapeIndex.open(path)
    ix.close()
    with pytest.raises(ValueError):
        ShapeIndex(path, dim=16)


def test_crash_during_save_keeps_previous_index(tmp_path, monkeypatch):
    path = tmp_path / "ix"
    ix = ShapeIndex(path, dim=4)
    ix.add("a", [1, 0, 0, 0])
    ix.save()
    saved = (path / INDEX_FILE).read_bytes()
    ix.add("b", [0, 1, 0, 0])

    def crashing_write(index, filename):
        with open(filename, "wb") as f:
            f.write(b"half an index")
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", crashing_write)
    with pytest.raises(OSError):
        ix.save()
    monkeypatch.undo()
    assert (path / INDEX_FILE).read_bytes() == saved
    assert sorted(p.name for p in path.iterdir() if ".tmp" in p.name) == []
    ix.close(save=False)  # the process "dies" here

    ix = ShapeIndex.open(path)  # old index file + SQLite that also holds "b"
    assert len(ix) == 2
    assert hit_ids(ix.search([0, 1, 0, 0], k=1)) == ["b"]
    assert hit_ids(ix.search([1, 0, 0, 0], k=1)) == ["a"]
    ix.close()


def test_reconcile_when_sqlite_is_ahead(tmp_path):
    path = tmp_path / "ix"
    vectors = random_unit(30, 8, seed=4)
    ix = ShapeIndex(path, dim=8)
    ix.add_many([f"s{i}" for i in range(20)], vectors[:20])
    ix.save()
    ix.add_many([f"s{i}" for i in range(20, 25)], vectors[20:25])  # committed, never saved
    ix.remove("s0")
    ix.remove("s21")
    ix.add("s1", vectors[29])  # upsert after the save
    ix.close(save=False)

    live = {f"s{i}" for i in range(25)} - {"s0", "s21"}
    for attempt in range(2):  # second pass: the reconciled index was saved
        ix = ShapeIndex.open(path)
        assert len(ix) == len(live) == faiss.read_index(str(path / INDEX_FILE)).ntotal
        everything = hit_ids(ix.search(vectors[0], k=100))
        assert sorted(everything) == sorted(live)  # nothing missing, nothing twice
        assert ix.search(vectors[29], k=1)[0].id == "s1"
        assert ix.search(vectors[1], k=1)[0].id != "s1"
        ix.close()

    (path / INDEX_FILE).write_bytes(b"garbage")  # unreadable index: rebuilt from SQLite
    with ShapeIndex.open(path) as ix:
        assert sorted(hit_ids(ix.search(vectors[0], k=100))) == sorted(live)


def clustered(n, dim, n_clusters, seed):
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((n_clusters, dim)))
    return unit(centres[rng.integers(0, n_clusters, n)] + 0.15 * rng.standard_normal((n, dim)))


def test_hnsw_mode_recall_and_removes(tmp_path):
    path, dim = tmp_path / "ix", 32
    vectors = clustered(220, dim, 10, seed=5)
    data, queries = vectors[:200], vectors[200:]
    ids = [f"s{i}" for i in range(200)]
    ix = ShapeIndex(path, dim=dim, exact_limit=50, ef_search=64)
    ix.add_many(ids[:40], data[:40], [{"i": i} for i in range(40)])
    assert ix.kind == "flat"
    ix.add_many(ids[40:], data[40:], [{"i": i} for i in range(40, 200)])
    assert ix.kind == "hnsw" and len(ix) == 200

    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    found = ix.search(queries, k=10)
    recall = np.mean([len({ids[j] for j in e} & set(hit_ids(f))) / 10 for e, f in zip(exact, found)])
    assert recall >= 0.9

    removed = {ids[j] for j in exact[:, 0]}  # each query's true nearest
    for id_ in removed:
        assert ix.remove(id_)
    assert ix.kind == "hnsw" and len(ix) == 200 - len(removed)
    assert 0 < len(ix._tombstones) <= 0.2 * 200  # tombstoned, no compaction yet

    def check(ix):
        for hits in ix.search(queries, k=10):
            assert len(hits) == 10 and not removed & set(hit_ids(hits))
        # filtered search stays exact in HNSW mode
        wanted = [i for i in range(0, 200, 7) if ids[i] not in removed]
        hits = ix.search(queries[0], k=3, filter={"i": wanted})
        best = sorted(wanted, key=lambda i: -float(queries[0] @ data[i]))[:3]
        assert hit_ids(hits) == [ids[i] for i in best]

    check(ix)
    ix.close()
    ix = ShapeIndex.open(path)  # tombstones survive a reopen
    assert ix.kind == "hnsw" and len(ix) == 200 - len(removed)
    check(ix)
    ix.compact()
    assert ix._tombstones == set() and ix._index.ntotal == len(ix)
    check(ix)
    for id_ in ids[:60]:  # past the tombstone fraction: compacts by itself
        ix.remove(id_)
    assert ix._index.ntotal - len(ix) <= 0.2 * ix._index.ntotal
    assert not set(ids[:60]) & set(hit_ids(ix.search(data[0], k=200)))
    ix.close()


def test_model_versions(index):
    index.add_many(["a", "b", "c"], np.eye(4)[:3])  # default: v1
    index.add_many(["d", "e"], np.eye(4)[:2], model_version="v2")
    index.add("a", [0, 0, 0, 1], model_version="v2")
    index.remove("e")
    assert index.model_versions() == {"v1": 2, "v2": 2}
    index.add("f", [1, 1, 0, 0], model_version=None)  # falls back to the index default
    assert index.model_versions() == {"v1": 3, "v2": 2}


def test_concurrent_adds(tmp_path):
    path, dim = tmp_path / "ix", 8
    ix = ShapeIndex(path, dim=dim)
    vectors = random_unit(8 * 25, dim, seed=6)
    errors = []

    def worker(t):
        try:
            for i in range(25):
                ix.add(f"t{t}/{i}", vectors[t * 25 + i], {"thread": t})
                ix.add("shared", vectors[t * 25 + i])  # every thread upserts the same id
                ix.search(vectors[i], k=3)
        except Exception as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    expected = {f"t{t}/{i}" for t in range(8) for i in range(25)} | {"shared"}
    assert len(ix) == len(expected) and set(ix.ids()) == expected
    ix.close()
    with ShapeIndex.open(path) as ix:
        assert set(hit_ids(ix.search(vectors[0], k=500))) == expected


def test_shape_field_is_searched_apart_and_survives_a_crash(tmp_path):
    """Two vectors per shape: the text field and the shape field rank independently, and the
    shape field's FAISS file is reconciled against SQLite like the text one."""
    path = tmp_path / "ix"
    text, shape = random_unit(30, 8, seed=1), random_unit(30, 6, seed=2)
    ix = ShapeIndex(path, dim=8, shape_dim=6)
    with pytest.raises(ValueError, match="shape embeddings"):
        ix.add("x", text[0])
    ix.add_many([f"s{i}" for i in range(20)], text[:20], shape_embeddings=shape[:20])
    ix.save()
    ix.add_many([f"s{i}" for i in range(20, 25)], text[20:25], shape_embeddings=shape[20:25])  # never saved
    ix.remove("s3")
    ix.add("s1", text[29], shape_embedding=shape[28])
    ix.close(save=False)
    live = {f"s{i}" for i in range(25)} - {"s3"}
    with ShapeIndex.open(path) as ix:
        assert ix.fields == {"text": 8, "shape": 6}
        assert sorted(hit_ids(ix.search(shape[0], k=100, field="shape"))) == sorted(live)
        assert ix.search(shape[22], k=1, field="shape")[0].id == "s22"
        assert ix.search(shape[28], k=1, field="shape")[0].id == "s1"
        assert ix.search(text[29], k=1)[0].id == "s1"
        np.testing.assert_allclose(ix.embedding("s1", field="shape"), shape[28], atol=1e-6)
        assert ix.search(shape[5], k=1, field="shape", filter={"missing": None}) == []
        with pytest.raises(ValueError, match="6"):
            ix.search(text[0], k=1, field="shape")  # an 8-d query in the 6-d field
        assert faiss.read_index(str(path / "index.shape.faiss")).ntotal == len(live)


def test_an_index_without_shape_vectors_gains_the_field(tmp_path):
    """An index made before shape vectors opens with shape_dim set: old rows stay text-searchable,
    new rows get both vectors, and shape search sees only shapes that have a shape vector."""
    path = tmp_path / "ix"
    text, shape = random_unit(6, 8, seed=3), random_unit(6, 4, seed=4)
    with ShapeIndex(path, dim=8) as ix:
        ix.add_many(["old0", "old1"], text[:2])
    with ShapeIndex.open(path, shape_dim=4) as ix:
        ix.add("new", text[2], shape_embedding=shape[2])
        assert hit_ids(ix.search(shape[2], k=10, field="shape")) == ["new"]
        assert set(hit_ids(ix.search(text[0], k=10))) == {"old0", "old1", "new"}
        assert ix.embedding("old0", field="shape") is None
    with pytest.raises(ValueError, match="shape vectors"):
        ShapeIndex.open(path, shape_dim=5)
