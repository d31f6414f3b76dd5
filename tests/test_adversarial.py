"""Hostile input against a real server (tests/hostile.py): no 5xx, no hang, the JSON error shape,
the server alive with bounded memory, and a normal request answering the same before and after.
A seeded subset runs by default; the full set with `pytest -m adversarial`. The tests after it
each pin one finding of issue 13 (they failed before the validation layer existed)."""
import json
import os
from collections import Counter
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from hostile import FAMILIES, generate, probe, problems, rss_bytes, run
from server_util import Server

SHARED = Path(os.environ.get("RECON_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MAX_UPLOAD = 2 << 20
RSS_GROWTH_LIMIT = 300 << 20  # the server process, over the whole hostile set
CLASSES = ["chair", "table", "lamp"]


def _files() -> list[Path]:
    files = sorted((SHARED / "meshes").glob("*"))[:12] + sorted((SHARED / "modelnet10" / "chair" / "test").glob("*.pcd"))[:2]
    if not files:
        pytest.skip(f"no real shape files under {SHARED}")
    return [f for f in files if f.stat().st_size < 1 << 20]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    from recon_serve.model.checkpoint import save_checkpoint
    from recon_serve.model.factory import create_model

    d = tmp_path_factory.mktemp("adversarial")
    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=len(CLASSES))
    model.set_num_parts(3)
    save_checkpoint(d / "micro.pt", model, class_names=CLASSES,
                    extra={"part_names": ["seat", "leg", "shade"], "category_parts": {"chair": [0, 1], "lamp": [2]}})
    s = Server(d / "micro.pt", d / "index", d / "cache", d / "server.log", max_upload_bytes=MAX_UPLOAD,
               body_timeout_s=2, header_timeout_s=2, decode_timeout_s=5, decode_cpu_s=3, api_keys="")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _hostile_run(server, client, n: int, seed: int):
    before, rss0 = probe(client), rss_bytes(server.pid)
    outcomes = run(server.url, generate(seed, n, _files(), MAX_UPLOAD))
    assert {o.case.family for o in outcomes} == set(FAMILIES)
    bad = problems(outcomes, hang_s=25)
    assert not bad, f"{len(bad)} of {len(outcomes)} hostile requests went wrong:\n" + "\n".join(bad[:30])
    assert client.get("/healthz").status_code == 200
    after = probe(client)
    assert [x["label"] for x in after["labels"]] == [x["label"] for x in before["labels"]]
    assert np.allclose([x["probability"] for x in after["labels"]], [x["probability"] for x in before["labels"]], atol=1e-6)
    growth = rss_bytes(server.pid) - rss0
    assert growth < RSS_GROWTH_LIMIT, f"server RSS grew {growth >> 20} MiB"
    return outcomes, growth


def test_a_seeded_hostile_subset(server, client):
    _hostile_run(server, client, n=320, seed=0)


@pytest.mark.adversarial
def test_the_full_hostile_set(server, client):
    outcomes, growth = _hostile_run(server, client, n=2400, seed=1)
    statuses = Counter(str(o.status) for o in outcomes)  # None: closed without an answer (slow/oversize)
    print(f"{len(outcomes)} hostile requests; statuses {json.dumps(dict(sorted(statuses.items())))}; "
          f"slowest {max(o.seconds for o in outcomes):.1f} s; server RSS growth {growth / 2**20:.0f} MiB")


# ---------------------------------------------------------------- one test per finding of issue 13

def _pts(n=256):
    return np.random.default_rng(1).normal(size=(n, 3)).tolist()


@pytest.mark.parametrize("metadata", ['{"s": "\\ud800"}', json.dumps({"k": json.loads("[" * 260 + "]" * 260)}),
                                      '{"i": 123456789012345678901234567890}', '{"x": "' + "y" * 20000 + '"}'])
def test_poisonous_metadata_is_refused_and_nothing_is_stored(client, metadata):
    body = '{"id": "poison", "points": ' + json.dumps(_pts()) + ', "metadata": ' + metadata + "}"
    r = client.post("/v1/shapes", content=body, headers={"content-type": "application/json"})
    assert r.status_code in (400, 413) and r.json()["error"] in ("invalid_metadata", "payload_too_large", "bad_request")
    assert client.get("/v1/shapes/poison").status_code == 404
    assert client.post("/v1/search/text", json={"text": "a chair", "k": 1000}).status_code == 200


@pytest.mark.parametrize("name,value", [(n, v) for n in ("n_points", "k", "normalise", "up_axis", "category")
                                        for v in ("[1024]", '{"a": 1}', "1e999")])
def test_options_of_the_wrong_type_are_400(client, name, value):
    path = "/v1/segment" if name == "category" else "/v1/classify"
    body = '{"points": ' + json.dumps(_pts()) + f', "{name}": {value}}}'
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert name in r.json()["detail"] or "category" in r.json()["detail"]


@pytest.mark.parametrize("filter", [{"c": list(range(1001))}, {f"k{i}": 1 for i in range(1001)}, {"c": 2 ** 64}])
def test_oversized_and_out_of_range_filters_are_400(client, filter):
    assert client.post("/v1/search/text", json={"text": "chair", "filter": filter}).status_code == 400
    assert client.post("/v1/search/shape", json={"points": _pts(), "filter": filter}).status_code == 400


def test_a_filter_with_many_values_still_matches(client):
    assert client.post("/v1/shapes", json={"id": "f1", "points": _pts(), "metadata": {"c": 999}}).status_code == 201
    hits = client.post("/v1/search/text", json={"text": "chair", "filter": {"c": list(range(1000))}}).json()["hits"]
    assert [h["id"] for h in hits] == ["f1"]


@pytest.mark.parametrize("where", ["body", "metadata", "filter"])
def test_json_nested_a_thousand_deep_is_400(client, where):
    deep = "[" * 1000 + "]" * 1000
    body = deep if where == "body" else '{"id": "d", "points": ' + json.dumps(_pts()) + f', "{where}": {deep}}}'
    r = client.post("/v1/shapes", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "deep" in r.json()["detail"]
    files = {"file": ("c.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")}
    assert client.post("/v1/search/shape", files=files, data={"filter": deep}).status_code == 400


def test_search_by_an_id_holding_a_lone_surrogate_is_400(client):
    r = client.post("/v1/search/shape", content=b'{"id": "\\ud800"}', headers={"content-type": "application/json"})
    assert r.status_code == 400


def _raw(server, data: bytes, wait: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_chunked_body_over_the_limit_is_413_and_bad_content_length_is_json(server, client):
    def chunks():
        for _ in range((MAX_UPLOAD >> 16) + 64):
            yield b"\0" * (1 << 16)
    try:
        r = client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    except httpx.RemoteProtocolError:
        pass  # answered 413 and closed before the whole body was sent
    reply = _raw(server, b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400") and json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"] == "bad_request"


@pytest.mark.parametrize("scale", [1e38, -3.0e38])
def test_coordinates_near_the_float32_limit_never_give_null_numbers(client, scale):
    pts = (np.random.default_rng(2).uniform(-1, 1, size=(256, 3)) * scale).tolist()
    for path in ("/v1/classify", "/v1/segment", "/v1/embed"):
        for normalise in (True, False):
            r = client.post(path, json={"points": pts, "normalise": normalise})
            assert r.status_code < 500
            if r.status_code == 200:
                assert "null" not in r.text and "NaN" not in r.text
            else:
                assert r.json()["error"] == "non_finite_coordinates"
    assert client.post("/v1/classify", json={"points": pts}).status_code == 200  # normalised in float64: fine


def test_label_budget_bounds_the_text_work(client):
    long = [f"{'x' * 190} {i}" for i in range(256)]
    t0 = time.monotonic()
    r = client.post("/v1/zero-shot", json={"points": _pts(), "labels": long})
    assert r.status_code == 400 and "characters" in r.json()["detail"] and time.monotonic() - t0 < 5
    short = [f"thing {i}" for i in range(256)]
    r = client.post("/v1/zero-shot", json={"points": _pts(), "labels": short})
    assert r.status_code == 200 and len(r.json()["scores"]) == 256


def test_slow_clients_are_cut_off(server):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")  # the head never completes
        assert s.recv(100) == b""  # closed by the header timeout
    assert time.monotonic() - t0 < 10
    head = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    reply = _raw(server, head, wait=20)  # the body never completes
    assert reply.startswith(b"HTTP/1.1 408")


def test_security_headers_origin_policy_and_model_path(server, client):
    r = client.get("/healthz")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in client.get("/").headers.get("content-security-policy", "default-src 'self'")
    r = client.post("/v1/classify", json={"points": _pts()}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden_origin"
    own = client.post("/v1/classify", json={"points": _pts()}, headers={"origin": server.url})
    assert own.status_code == 200
    path = client.get("/v1/models").json()["source_checkpoint"]["path"]
    assert "/" not in path and path.endswith(".pt")


def test_decode_workers_do_not_see_secrets(monkeypatch):
    from recon_serve.geometry.decode import _Worker

    monkeypatch.setenv("RECON_API_KEYS", "s3cret")
    monkeypatch.setenv("MY_TOKEN", "t0ken")
    w = _Worker(1 << 31, 60)
    try:
        env = Path(f"/proc/{w.proc.pid}/environ").read_bytes()
    finally:
        w.stop()
    assert b"s3cret" not in env and b"t0ken" not in env and b"PYTHONPATH" in env


def test_read_keys_guard_records_and_search(tmp_path):
    import torch

    from recon_serve.model.checkpoint import save_checkpoint
    from recon_serve.model.factory import create_model

    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=2)
    save_checkpoint(tmp_path / "m.pt", model, class_names=["a", "b"])
    s = Server(tmp_path / "m.pt", tmp_path / "index", tmp_path / "cache", tmp_path / "log", read_keys="r1", api_keys="w1",
               cors_origins="https://app.example")
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert c.post("/v1/shapes", json={"id": "a", "points": _pts()}, headers={"x-api-key": "w1"}).status_code == 201
            assert c.get("/v1/shapes/a").status_code == 401
            assert c.post("/v1/search/text", json={"text": "a"}).status_code == 401
            assert c.get("/v1/shapes/a", headers={"x-api-key": "r1"}).status_code == 200
            assert c.get("/v1/shapes/a", headers={"x-api-key": "w1"}).status_code == 200
            assert c.post("/v1/classify", json={"points": _pts()}).status_code == 200  # no records read
            r = c.post("/v1/classify", json={"points": _pts()}, headers={"origin": "https://app.example"})
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    finally:
        s.stop()


def test_the_fast_parser_keeps_the_standard_parsers_values():
    """parse_json reads with orjson, but what orjson refuses or rounds goes to the standard parser."""
    from recon_serve.api.validation import parse_json
    from recon_serve.errors import BadRequest

    big = 123456789012345678901234567890
    assert parse_json(f'{{"metadata": {{"i": {big}, "j": -{big}}}}}'.encode()) == {"metadata": {"i": big, "j": -big}}
    assert parse_json(b'{"k": 1e30}') == {"k": 1e30}  # a float stays a float
    body = parse_json(b'{"points": [[NaN, 0, 1], [1.5, 2, 3]]}')  # orjson refuses NaN: the decoder reports it
    assert np.isnan(body["points"][0][0]) and body["points"][1] == [1.5, 2, 3]
    for bad in (b"{not json", b"[" * 2000 + b"]" * 2000, b'{"s": "\\ud800"}'):
        with pytest.raises(BadRequest):
            parse_json(bad)


@pytest.mark.parametrize("body", [
    b'{"points": [[1,2],[3,4,5,6]]}',  # ragged rows whose counts add up
    b'{"points": [[1,[2],3]]}',  # nested inside a row
    b'{"points": [[1,2,3],5,[[1,2],3,4,5]]}',
    b'{"points": [[1,2,3],[]]}',
    b'{"points": [[1,2,3]], "labels": ["a[", "b"]}',  # brackets beside the points
    b'{"points": [[1,2,3]], "k": "\\u005b"}',  # an escape
    b'{"points": [[1,2,3]], "points": [[4,5,6]]}',  # a duplicate key: the last one counts
    b'{"points": [[true,2,3]]}', b'{"points": []}', b'{"points": "abc"}', b"[1, 2]",
    b'{"points": [[123456789012345678901234567890, 2, 3]]}', b'{"points": [[1,2,3]], "k": 9223372036854775808.0}',
])
def test_the_point_array_fast_path_gives_what_parse_json_gives(body):
    """parse_shape_json reads plain [x, y, z] arrays straight into float32; every other body must come
    out exactly as parse_json reads it (the decoder then accepts or refuses it as before)."""
    from recon_serve.api.validation import parse_json, parse_shape_json

    assert parse_shape_json(body) == parse_json(body)


def test_the_point_array_fast_path_reads_plain_triples_into_float32():
    from recon_serve.api.validation import parse_json, parse_shape_json
    from recon_serve.geometry.decode import decode_points_json

    cloud = np.random.default_rng(3).normal(size=(500, 3)) * 1e3
    body = json.dumps({"points": cloud.tolist(), "k": 3, "metadata": {"a": {"b": 1}}, "up_axis": "y"}).encode()
    fast, slow = parse_shape_json(body), parse_json(body)
    assert isinstance(fast["points"], np.ndarray) and fast["points"].dtype == np.float32
    assert {k: v for k, v in fast.items() if k != "points"} == {k: v for k, v in slow.items() if k != "points"}
    np.testing.assert_array_equal(decode_points_json(fast["points"]).vertices, decode_points_json(slow["points"]).vertices)
    huge = parse_shape_json(b'{"points": [[1e39, 0, 0], [1, 2, 3]]}')["points"]  # beyond float32: inf, as before
    assert isinstance(huge, np.ndarray) and np.isinf(huge[0, 0])
