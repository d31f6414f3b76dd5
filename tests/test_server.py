"""The HTTP server end to end: real uvicorn processes on free ports, a micro checkpoint, the ORT backend.

One server serves most tests (export cached in a temp dir, so later starts skip it); the restart
test starts two more on one index directory, with API keys. Real files come from ../shared/data.
"""
from __future__ import annotations

import io
import os
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from recon_client import ReconClient, ReconError  # noqa: E402
from server_util import Server  # noqa: E402

SHARED = Path(os.environ.get("RECON_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MESHES = SHARED / "meshes"
MODELNET = SHARED / "modelnet10"
CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]
PARTS = ["seat", "back", "leg", "top", "base"]
N = 256  # the micro model's points


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    import torch

    from recon_serve.model.checkpoint import save_checkpoint
    from recon_serve.model.factory import create_model

    d = tmp_path_factory.mktemp("server")
    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=len(CLASSES))
    model.set_num_parts(len(PARTS))
    save_checkpoint(d / "micro.pt", model, class_names=CLASSES,
                    extra={"part_names": PARTS, "category_parts": {"chair": [0, 1, 2], "table": [3, 2, 4]}})
    return d


@pytest.fixture(scope="module")
def server(workdir):
    s = Server(workdir / "micro.pt", workdir / "index", workdir / "cache", workdir / "server.log",
               max_wait_ms=150, max_batch=16)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    with ReconClient(server.url) as c:
        yield c


def _modelnet(cls: str, n: int) -> list[Path]:
    files = sorted((MODELNET / cls / "test").glob("*.pcd"))[:n]
    if not files:
        pytest.skip(f"no ModelNet10 {cls} files under {MODELNET}")
    return files


def _mesh(name: str) -> Path:
    path = MESHES / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def _cloud(seed: int = 0, n: int = 500) -> list[list[float]]:
    return np.random.default_rng(seed).normal(size=(n, 3)).tolist()


# ------------------------------------------------------------------ service endpoints

def test_health_ready_models(client):
    assert client.health() == {"status": "ok"}
    ready = client.ready()
    assert ready["ready"] and ready["model_loaded"] and ready["index_open"]
    card = client.models()
    assert card["class_names"] == CLASSES and card["part_names"] == PARTS
    assert card["model_version"] == ready["model_version"] and card["backend"] == "onnxruntime"


# ------------------------------------------------------------------ inference endpoints

def test_classify_file_and_points(client):
    out = client.classify(_modelnet("chair", 1)[0], k=3, n_points=N)
    assert len(out["labels"]) == 3 and {l["label"] for l in out["labels"]} <= set(CLASSES)
    probs = [l["probability"] for l in out["labels"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert len(client.classify(_cloud(), n_points=N)["labels"]) == 5


def test_segment_mesh(client):
    out = client.segment(_mesh("chair_model.obj"), up_axis="y", n_points=N)
    assert len(out["points"]) == len(out["labels"]) == N
    assert out["category"] in ("chair", "table") and out["part_names"] == PARTS
    allowed = {"chair": {0, 1, 2}, "table": {3, 2, 4}}[out["category"]]
    assert set(out["labels"]) <= allowed
    forced = client.segment(_mesh("chair_model.obj"), up_axis="y", n_points=N, category="table")
    assert forced["category"] == "table" and set(forced["labels"]) <= {2, 3, 4}


def test_zero_shot_json_and_form(client):
    labels = ["chair", "table", "lamp"]
    out = client.zero_shot(_cloud(), labels, n_points=N)
    assert sorted(s["label"] for s in out["scores"]) == sorted(labels)
    assert abs(sum(s["probability"] for s in out["scores"]) - 1) < 1e-6
    form = client.zero_shot(_modelnet("chair", 1)[0], labels, n_points=N)  # multipart: labels as a JSON list field
    assert len(form["scores"]) == 3
    with pytest.raises(ReconError) as e:
        client.zero_shot(_cloud(), [f"l{i}" for i in range(257)], n_points=N)
    assert e.value.status == 400


def test_embed_is_unit_and_deterministic(client):
    a = client.embed(_cloud(1), n_points=N)
    b = client.embed(_cloud(1), n_points=N)
    assert a["dim"] == len(a["embedding"]) == 384
    assert a["shape_dim"] == len(a["shape_embedding"]) > 0
    for key in ("embedding", "shape_embedding"):
        assert abs(np.linalg.norm(a[key]) - 1) < 1e-4
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)


def _ply_cloud(path: Path, points: np.ndarray) -> Path:
    """An ASCII PLY point cloud (vertices only) holding exactly these float32 coordinates."""
    rows = "\n".join(" ".join(repr(float(c)) for c in p) for p in points)
    path.write_text(f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\n"
                    f"property float z\nend_header\n{rows}\n")
    return path


def _same(a, b, tol: float = 1e-5) -> bool:
    """Equal JSON values, floats within tol."""
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k], tol) for k in a)
    return a == b


def test_json_lane_and_uploads_agree(client, server, tmp_path):
    """JSON requests to the shape endpoints are served by ShapeLane, uploads by FastAPI: for the same
    points both give the same answer, and the lane's answers fit the routes' response models."""
    from recon_serve.api import schemas

    pts = np.asarray(_cloud(7, N), np.float32)
    ply = _ply_cloud(tmp_path / "cloud.ply", pts)
    cases = [(client.classify, {"k": 3}, schemas.ClassifyResponse),
             (client.segment, {}, schemas.SegmentResponse),
             (lambda shape, **o: client.zero_shot(shape, ["chair", "table", "lamp"], **o), {}, schemas.ZeroShotResponse),
             (client.embed, {}, schemas.EmbedResponse),
             (client.search_shape, {"k": 2}, schemas.SearchResponse)]
    client.add_shape("lane/a", pts.tolist(), n_points=N)  # JSON: through the lane, 201
    assert client.get_shape("lane/a")["id"] == "lane/a"
    for call, options, model in cases:
        lane, upload = call(pts.tolist(), n_points=N, **options), call(ply, n_points=N, **options)
        model.model_validate(lane)
        assert _same(lane, upload), (lane, upload)
    r = httpx.post(f"{server.url}/v1/classify", json={"points": pts.tolist(), "n_points": N},
                   headers={"x-request-id": "lane-check"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"] == "lane-check" and r.headers["x-content-type-options"] == "nosniff"
    assert 'recon_requests_total{method="POST",route="/v1/classify",status="200"}' in client.metrics()
    r = httpx.get(f"{server.url}/v1/classify")  # other methods: FastAPI's answer
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    client.delete_shape("lane/a")


def test_lane_refuses_dependencies_it_cannot_call():
    from fastapi import APIRouter, Depends, FastAPI

    from recon_serve.api.lane import ShapeLane, shape_route

    async def needs_more(request, other: int = 0):
        return None

    router = APIRouter(dependencies=[Depends(needs_more)])

    @shape_route(router, "/x")
    async def handler(state, inp):
        return {}

    with pytest.raises(TypeError, match="must take only the request"):
        ShapeLane(None, FastAPI(), [router])


# ------------------------------------------------------------------ user mistakes: 4xx with the error body

@pytest.mark.parametrize("name", ["empty.stl", "empty.obj", "empty.ply", "notenoughindices.obj"])
def test_broken_meshes_are_4xx(server, name):
    with _mesh(name).open("rb") as f:
        r = httpx.post(f"{server.url}/v1/embed", files={"file": (name, f)}, timeout=60)
    assert 400 <= r.status_code < 500, r.text
    assert set(r.json()) == {"error", "detail"}


def test_bad_requests(server, tmp_path):
    url = server.url
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("cube.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    r = httpx.post(f"{url}/v1/embed", files={"file": ("cube.obj", buf.getvalue())})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_format"
    r = httpx.post(f"{url}/v1/embed", content=b'{"points": [[0, 0, NaN], [1, 1, 1]]}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "non_finite_coordinates"
    r = httpx.post(f"{url}/v1/embed", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_format"
    r = httpx.post(f"{url}/v1/embed", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    r = httpx.post(f"{url}/v1/embed", json={"points": [[0, 0], [1, 1]]})
    assert r.status_code == 422 and r.json()["error"] == "invalid_points"
    r = httpx.post(f"{url}/v1/embed", json={"points": _cloud(), "n_points": 10**9})
    assert r.status_code == 400
    r = httpx.post(f"{url}/v1/embed", json={"points": _cloud(), "up_axis": "w"})
    assert r.status_code == 400
    r = httpx.post(f"{url}/v1/embed", files={"file": ("shape.exe", b"MZ")})
    assert r.status_code == 415
    r = httpx.post(f"{url}/v1/search/text", json={"k": 3})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = httpx.get(f"{url}/v1/nowhere")
    assert r.status_code == 404 and set(r.json()) == {"error", "detail"}


# ------------------------------------------------------------------ library + search

def test_shapes_and_search(client):
    chairs, tables = _modelnet("chair", 2), _modelnet("table", 2)
    for path, cat in [(p, "chair") for p in chairs] + [(p, "table") for p in tables]:
        rec = client.add_shape(f"mn/{path.stem}", path, metadata={"category": cat}, n_points=N)
        assert rec["metadata"] == {"category": cat}
    first = f"mn/{chairs[0].stem}"
    assert client.get_shape(first)["metadata"] == {"category": "chair"}
    hits = client.search_text("a chair", k=10)["hits"]
    assert {h["id"] for h in hits} >= {f"mn/{p.stem}" for p in chairs + tables}
    only_tables = client.search_text("a chair", k=10, filter={"category": "table"})["hits"]
    assert {h["metadata"]["category"] for h in only_tables} == {"table"}
    by_id = client.search_shape(id=first, k=3)["hits"]
    assert first not in {h["id"] for h in by_id} and len(by_id) == 3
    # shape search ranks by the shape embedding, text search by the text embedding
    a, b = (client.embed(p, n_points=N) for p in chairs)
    score = {h["id"]: h["score"] for h in by_id}[f"mn/{chairs[1].stem}"]
    assert abs(score - float(np.dot(a["shape_embedding"], b["shape_embedding"]))) < 1e-4
    assert abs(score - float(np.dot(a["embedding"], b["embedding"]))) > 1e-3
    by_upload = client.search_shape(chairs[0], k=1, n_points=N)["hits"]
    assert by_upload[0]["id"] == first and by_upload[0]["score"] > 0.999
    client.delete_shape(first)
    with pytest.raises(ReconError) as e:
        client.get_shape(first)
    assert e.value.status == 404 and e.value.error == "not_found"
    with pytest.raises(ReconError) as e:
        client.search_shape(id=first)
    assert e.value.status == 404


# ------------------------------------------------------------------ batching

def _histogram(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out[le] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count"):
            out["count"] = float(line.rsplit(" ", 1)[1])
    return out


def test_concurrent_requests_are_batched(client, server):
    before = _histogram(client.metrics(), "recon_batch_size")

    def embed(i):  # more points than RECON_INLINE_MAX_POINTS (2,048): never run alone on the event loop
        return httpx.post(f"{server.url}/v1/embed", json={"points": _cloud(i), "n_points": 4096}, timeout=60).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(embed, range(8))) == [200] * 8
    after = _histogram(client.metrics(), "recon_batch_size")
    batches = after["count"] - before.get("count", 0)
    singles = after["1.0"] - before.get("1.0", 0)
    assert batches < 8 and singles < batches, (before, after)  # at least one model call took > 1 shape
    assert "recon_stage_seconds_count{stage=\"infer\"}" in client.metrics()


# ------------------------------------------------------------------ API keys + restart

def test_api_key_and_index_survive_restart(workdir):
    index, cache = workdir / "keyed-index", workdir / "cache"
    path = _modelnet("chair", 1)[0]
    s = Server(workdir / "micro.pt", index, cache, workdir / "keyed.log", api_keys="k1,k2")
    try:
        with ReconClient(s.url) as anon, ReconClient(s.url, api_key="k2") as keyed:
            with pytest.raises(ReconError) as e:
                anon.add_shape("a", path, n_points=N)
            assert e.value.status == 401 and e.value.error == "unauthorized"
            with pytest.raises(ReconError) as e:
                anon.add_shape("c", _cloud(4), n_points=N)  # JSON: the lane runs the route's key check too
            assert e.value.status == 401 and e.value.error == "unauthorized"
            keyed.add_shape("a", path, metadata={"category": "chair"}, n_points=N)
            keyed.add_shape("b", _cloud(3), metadata={"category": "noise"}, n_points=N)
            with pytest.raises(ReconError) as e:
                anon.delete_shape("b")
            assert e.value.status == 401
            assert anon.get_shape("a")["metadata"] == {"category": "chair"}  # reads stay open
            assert anon.search_text("a chair", k=5)["hits"]
    finally:
        s.stop()
    s = Server(workdir / "micro.pt", index, cache, workdir / "keyed.log", api_keys="k1,k2")
    try:
        with ReconClient(s.url, api_key="k1") as c:
            assert c.get_shape("a")["metadata"] == {"category": "chair"}
            assert {h["id"] for h in c.search_text("a chair", k=5)["hits"]} == {"a", "b"}
            assert c.search_shape(path, k=1, n_points=N)["hits"][0]["id"] == "a"
            assert c.ready()["index_size"] == 2 and c.ready()["stale_embeddings"] == {}
            c.delete_shape("b")
    finally:
        s.stop()


def test_server_on_a_milvus_index(workdir):
    """`serve --index milvus://...`: the same library API on Milvus (Lite here; a cluster by URL).
    Reopening a collection is covered by tests/test_index_backends.py."""
    pytest.importorskip("milvus_lite")
    index, cache = f"milvus://{workdir}/milvus.db?collection=library", workdir / "cache"
    path = _modelnet("chair", 1)[0]
    s = Server(workdir / "micro.pt", index, cache, workdir / "milvus.log")
    try:
        with ReconClient(s.url) as c:
            c.add_shape("a", path, metadata={"category": "chair"}, n_points=N)
            c.add_shape("b", _cloud(3), metadata={"category": "noise"}, n_points=N)
            assert c.get_shape("a")["metadata"] == {"category": "chair"}
            assert [h["id"] for h in c.search_shape(path, k=2, n_points=N)["hits"]][0] == "a"
            assert {h["id"] for h in c.search_text("a chair", k=5, filter={"category": "noise"})["hits"]} == {"b"}
            assert c.ready()["index_size"] == 2
            c.delete_shape("b")
            assert c.ready()["index_size"] == 1
    finally:
        s.stop()


# ------------------------------------------------------------------ in-process pieces

def test_torch_and_ort_backends_agree(workdir, server):
    from recon_serve.backends.ort_backend import OrtBackend
    from recon_serve.backends.torch_backend import TorchBackend

    ort_b = OrtBackend(workdir / "micro.pt", workdir / "cache", threads=1)  # the server's cached export
    torch_b = TorchBackend(workdir / "micro.pt", threads=1)
    assert ort_b.version == torch_b.version
    x = np.random.default_rng(0).normal(size=(2, N, 3)).astype(np.float32)
    a, b = ort_b.infer(x, parts=True), torch_b.infer(x)
    assert set(a) == set(b) == {"embedding", "shape_embedding", "logits", "part_logits"}
    assert set(ort_b.infer(x)) == {"embedding", "shape_embedding", "logits"}  # the global graph: no part head
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-4)


def test_settings_from_env():
    from recon_serve.settings import Settings

    s = Settings.from_env({"RECON_BACKEND": "torch", "RECON_MAX_BATCH": "4", "RECON_API_KEYS": "a, b,",
                           "RECON_MAX_WAIT_MS": "2.5"}, max_batch=8)
    assert (s.backend, s.max_batch, s.api_keys, s.max_wait_ms) == ("torch", 8, ("a", "b"), 2.5)
    with pytest.raises(ValueError):
        Settings.from_env({"RECON_MAX_POINTS": "many"})
