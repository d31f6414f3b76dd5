"""A seeded generator of hostile requests against every endpoint, and a runner that sends them to a
real server and records what came back. Used by tests/test_adversarial.py; not a test module.

Each family mirrors one way clients and attackers break servers: random bytes under every
extension, truncated and byte-flipped real files, zip and gzip bombs, NaN/inf/huge coordinates,
degenerate meshes, wrong-typed options, JSON nested deep, huge label lists, poisonous metadata
and filters, wrong content types, broken multipart, oversize and chunked bodies, lying headers
and slow bodies (the last two over a raw socket).
"""
from __future__ import annotations

import gzip
import io
import json
import random
import socket
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SHAPE_ENDPOINTS = ("/v1/classify", "/v1/segment", "/v1/zero-shot", "/v1/embed", "/v1/shapes", "/v1/search/shape")
EXTENSIONS = (".obj", ".stl", ".ply", ".off", ".glb", ".gltf", ".3mf", ".pcd", ".npy", ".npz", ".step", ".xyz", "")
BAD_VALUES = ([1], [], {"a": 1}, -1, 0, 10 ** 30, 1e300, "abc", True, None, "", "\ud800", "1e999", [[["x"]]], 1.5)
BAD_RAW = ("1e999", "-1e999", "NaN", "Infinity", "1" * 400, "[" * 50 + "]" * 50)


@dataclass
class Case:
    family: str
    method: str
    path: str
    kwargs: dict = field(default_factory=dict)  # httpx request arguments
    raw: bytes | None = None  # sent over a plain socket instead
    trickle: float = 0.0  # seconds between raw chunks (slow bodies)


def _points(rng: random.Random, n: int = 64) -> list:
    return [[rng.uniform(-1, 1) for _ in range(3)] for _ in range(n)]


def _fields(rng: random.Random, path: str) -> dict:
    extra = {"/v1/zero-shot": {"labels": ["chair", "table"]}, "/v1/shapes": {"id": f"h{rng.randrange(10**6)}"}}
    return dict(extra.get(path, {}))


def _upload(path: str, name: str, data: bytes, fields: dict | None = None) -> dict:
    form = {k: (json.dumps(v) if not isinstance(v, str) else v) for k, v in (fields or {}).items()}
    return {"files": {"file": (name, data, "application/octet-stream")}, "data": form}


def _zip(members: dict[str, bytes], declared: int | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    data = bytearray(buf.getvalue())
    if declared is not None:  # lie about the uncompressed size in the central directory
        at = data.rfind(b"PK\x01\x02")
        data[at + 24:at + 28] = (declared & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(data)


def _deep(depth: int, leaf=1, kind: str = "list"):
    v = leaf
    for _ in range(depth):
        v = [v] if kind == "list" else {"k": v}
    return v


def _json_body(obj) -> dict:
    return {"content": json.dumps(obj, allow_nan=True).encode(), "headers": {"content-type": "application/json"}}


class Families:
    """One method per family: each returns a list of cases drawn with `rng`."""

    def __init__(self, files: list[Path], max_upload: int):
        self.files = [(f.name, f.read_bytes()) for f in files]
        self.max_upload = max_upload

    def random_bytes(self, rng):
        ext = rng.choice(EXTENSIONS)
        data = rng.randbytes(rng.choice((0, 1, 7, 100, 4000)))
        path = rng.choice(SHAPE_ENDPOINTS)
        return [Case("random_bytes", "POST", path, _upload(path, f"x{ext}", data, _fields(rng, path)))]

    def truncated(self, rng):
        name, data = rng.choice(self.files)
        cut = data[: rng.randrange(max(1, len(data)))]
        path = rng.choice(SHAPE_ENDPOINTS)
        return [Case("truncated", "POST", path, _upload(path, name, cut, _fields(rng, path)))]

    def byte_flip(self, rng):
        name, data = rng.choice(self.files)
        b = bytearray(data)
        for _ in range(rng.choice((1, 4, 32))):
            i = rng.randrange(len(b))
            b[i] = rng.randrange(256)
        path = rng.choice(SHAPE_ENDPOINTS)
        return [Case("byte_flip", "POST", path, _upload(path, name, bytes(b), _fields(rng, path)))]

    def bombs(self, rng):
        path = rng.choice(SHAPE_ENDPOINTS)
        kind = rng.randrange(4)
        if kind == 0:  # a .3mf whose model declares a huge size
            data = _zip({"3D/3dmodel.model": b"<model>" + b" " * 10000 + b"</model>"}, declared=rng.choice((2**31, 2**32 - 1)))
            return [Case("bombs", "POST", path, _upload(path, "bomb.3mf", data, _fields(rng, path)))]
        if kind == 1:  # a real 1 MB-of-zeros member compressing to ~1 KB, many times
            data = _zip({f"a{i}.npy": b"\0" * (1 << 20) for i in range(rng.choice((4, 64)))})
            return [Case("bombs", "POST", path, _upload(path, "bomb.npz", data, _fields(rng, path)))]
        if kind == 2:  # a .3mf declaring a million vertices in a few KB
            vs = "".join('<vertex x="0" y="0" z="0"/>' for _ in range(2000))
            xml = f'<model><resources><object id="1"><mesh><vertices>{vs}</vertices></mesh></object></resources></model>'
            data = _zip({"3D/3dmodel.model": xml.encode() * 50})
            return [Case("bombs", "POST", path, _upload(path, "verts.3mf", data, _fields(rng, path)))]
        body = gzip.compress(json.dumps({"points": _points(rng)}).encode())  # gzip the server does not inflate
        return [Case("bombs", "POST", path, {"content": body, "headers": {"content-type": "application/json",
                                                                           "content-encoding": "gzip"}})]

    def coordinates(self, rng):
        path = rng.choice(SHAPE_ENDPOINTS)
        pts = _points(rng)
        bad = rng.choice(("NaN", "Infinity", "-Infinity", "1e38", "-3.4e38", "1e308", "1e-320", '"1"', "null", "[1]"))
        rows = [json.dumps(p) for p in pts]
        k = rng.randrange(1, len(rows))
        for i in rng.sample(range(len(rows)), k if bad in ("1e38", "-3.4e38") else 1):
            rows[i] = f"[{bad}, {bad}, {bad}]" if bad in ("1e38", "-3.4e38") else f"[{bad}, 0, 0]"
        extra = {**_fields(rng, path), **({"normalise": False} if rng.random() < 0.3 else {})}
        body = "{" + ", ".join([f'"points": [{", ".join(rows)}]'] + [f"{json.dumps(a)}: {json.dumps(b)}" for a, b in extra.items()]) + "}"
        return [Case("coordinates", "POST", path, {"content": body.encode(), "headers": {"content-type": "application/json"}})]

    def degenerate(self, rng):
        path = rng.choice(SHAPE_ENDPOINTS)
        kind = rng.randrange(5)
        if kind == 0:
            obj = "v 1 1 1\n" * 3 + "f 1 2 3\n"
        elif kind == 1:
            obj = "v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n"  # collinear: no area
        elif kind == 2:
            obj = "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 99\n"  # index out of range
        elif kind == 3:
            obj = "v 1e38 1e38 1e38\nv -1e38 0 0\nv 0 1e38 0\nf 1 2 3\n"
        else:
            obj = "v 0 0 0\n"
        return [Case("degenerate", "POST", path, _upload(path, "d.obj", obj.encode(), _fields(rng, path)))]

    def options(self, rng):
        path = rng.choice(SHAPE_ENDPOINTS + ("/v1/search/text",))
        name = rng.choice(("n_points", "k", "normalise", "up_axis", "category", "id", "labels", "filter", "metadata", "text"))
        body = {"points": _points(rng), **_fields(rng, path)}
        if path == "/v1/search/text":
            body = {"text": "a chair"}
        if rng.random() < 0.5:
            body[name] = rng.choice(BAD_VALUES)
            return [Case("options", "POST", path, _json_body(body))]
        text = json.dumps(body)[:-1] + f', "{name}": {rng.choice(BAD_RAW)}}}'
        return [Case("options", "POST", path, {"content": text.encode(), "headers": {"content-type": "application/json"}})]

    def deep_json(self, rng):
        path = rng.choice(SHAPE_ENDPOINTS + ("/v1/search/text",))
        depth = rng.choice((40, 260, 1000, 5000, 100_000))
        where = rng.choice(("body", "points", "metadata", "filter", "labels"))
        if where == "body":
            text = "[" * depth + "]" * depth
        else:
            base = {"points": _points(rng), **_fields(rng, path)} if path != "/v1/search/text" else {"text": "a chair"}
            text = json.dumps(base)[:-1] + f', "{where}": ' + ("[" * depth + "]" * depth if rng.random() < 0.5
                                                           else '{"k": ' * depth + "1" + "}" * depth) + "}"
        if rng.random() < 0.3 and path != "/v1/search/text":  # the same in a multipart field
            name, data = rng.choice(self.files)
            return [Case("deep_json", "POST", path, {"files": {"file": (name, data)},
                                                      "data": {where if where != "body" else "metadata": "[" * depth + "]" * depth}})]
        return [Case("deep_json", "POST", path, {"content": text.encode(), "headers": {"content-type": "application/json"}})]

    def labels(self, rng):
        n = rng.choice((0, 1, 257, 1000, 256))
        width = rng.choice((1, 64, 200, 201, 5000))
        value = rng.choice((
            ["".join(rng.choice("abcdefgh ") for _ in range(width)) + str(i) for i in range(n)],
            {"a": 1}, 5, [["chair"]], [""], ["   "], ["\ud800"], "chair",
        ))
        return [Case("labels", "POST", "/v1/zero-shot", _json_body({"points": _points(rng), "labels": value}))]

    def metadata(self, rng):
        value = rng.choice(({"s": "\ud800"}, {"\udfff": 1}, _deep(rng.choice((9, 260)), kind="dict"),
                            {"big": "x" * 20_000}, {"i": 2 ** 70}, {"f": float("nan")}, {"f": float("inf")},
                            [1, 2], "text", 5, {f"k{i}": i for i in range(300)}, {"ok": _deep(7)}))
        body = json.dumps({"id": f"m{rng.randrange(10**6)}", "points": _points(rng), "metadata": value}, allow_nan=True)
        return [Case("metadata", "POST", "/v1/shapes", {"content": body.encode(), "headers": {"content-type": "application/json"}})]

    def filters(self, rng):
        value = rng.choice(({"c": list(range(1001))}, {f"k{i}": 1 for i in range(1001)}, {"c": 2 ** 64},
                            {"c": [2 ** 63]}, {"c": {"nested": 1}}, {"c": [[1]]}, {"\ud800": 1}, {"c": "\ud800"},
                            {"c": list(range(900))}, {"c": float("nan")}, [1], "x", {"c": []}))
        if rng.random() < 0.5:
            body = json.dumps({"text": "a chair", "filter": value}, allow_nan=True)
            return [Case("filters", "POST", "/v1/search/text", {"content": body.encode(), "headers": {"content-type": "application/json"}})]
        body = json.dumps({"points": _points(rng), "filter": value}, allow_nan=True)
        return [Case("filters", "POST", "/v1/search/shape", {"content": body.encode(), "headers": {"content-type": "application/json"}})]

    def content_types(self, rng):
        path = rng.choice(SHAPE_ENDPOINTS + ("/v1/search/text",))
        ctype = rng.choice(("text/plain", "application/xml", "multipart/form-data", "application/json; charset=latin-1",
                            "application/x-www-form-urlencoded", "image/png", "", "application/json"))
        body = rng.choice((json.dumps({"points": _points(rng)}).encode(), b"points=1", rng.randbytes(64), b"", b"\xff\xfe{"))
        return [Case("content_types", "POST", path, {"content": body, "headers": {"content-type": ctype}})]

    def multipart(self, rng):
        path = rng.choice(SHAPE_ENDPOINTS)
        name, data = rng.choice(self.files)
        b = "XyZ"
        kind = rng.randrange(4)
        if kind == 0:  # truncated before the closing boundary
            body = f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n".encode() + data[:100]
        elif kind == 1:  # boundary in the header differs from the body's
            body = "--other\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc\r\n--other--\r\n".encode()
        elif kind == 2:  # two files
            part = f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n".encode() + data + b"\r\n"
            body = part * 2 + f"--{b}--\r\n".encode()
        else:  # a field without a name
            body = f"--{b}\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--{b}--\r\n".encode()
        return [Case("multipart", "POST", path, {"content": body, "headers": {"content-type": f"multipart/form-data; boundary={b}"}})]

    def oversize(self, rng):
        path = rng.choice(SHAPE_ENDPOINTS)
        size = self.max_upload + (2 << 20)
        if rng.random() < 0.5:
            return [Case("oversize", "POST", path, _upload(path, "big.npy", b"\0" * size))]

        def chunks():  # no Content-Length: the server counts while reading
            for _ in range(size >> 16):
                yield b"\0" * (1 << 16)
        return [Case("oversize", "POST", path, {"content": chunks(), "headers": {"content-type": "application/json"}})]

    def headers(self, rng):
        path = rng.choice(SHAPE_ENDPOINTS)
        body = json.dumps({"points": _points(rng, 8)}).encode()
        head = rng.choice((
            b"Content-Length: abc\r\n", b"Content-Length: -5\r\n", b"Content-Length: 99999999999999999999\r\n",
            b"Content-Length: 5\r\nContent-Length: 7\r\n", b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
            b"Transfer-Encoding: gzip, chunked\r\n", b"Content-Type: application/json\r\nX-API-Key: \xff\xfe\r\n",
            b"Host: \r\n", b"Content-Length: 1000000\r\n",  # says more than it sends: the body deadline ends it
        ))
        raw = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode() + head + b"\r\n" + body)
        return [Case("headers", "POST", path, raw=raw)]

    def ids(self, rng):
        ident = rng.choice(("%ED%A0%80", "x" * 10_000, "../../etc/passwd", "%00", "a%2Fb", "%FF%FE", "\u2603", " "))
        method = rng.choice(("GET", "DELETE"))
        if rng.random() < 0.5:
            return [Case("ids", method, f"/v1/shapes/{ident}")]
        return [Case("ids", "POST", "/v1/search/shape", _json_body({"id": rng.choice(("\ud800", ident, 5, ["a"], {"a": 1}))}))]

    def slow(self, rng):
        body = json.dumps({"points": _points(rng, 8)}).encode()
        raw = (f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        return [Case("slow", "POST", "/v1/classify", raw=raw, trickle=0.5)]


FAMILIES = [n for n in vars(Families) if not n.startswith("_")]


def generate(seed: int, n: int, files: list[Path], max_upload: int, families=None) -> list[Case]:
    """`n` cases, the families in turn (so any n covers each), each drawn from a seeded stream."""
    rng = random.Random(seed)
    gen = Families(files, max_upload)
    names = list(families or FAMILIES)
    cases: list[Case] = []
    while len(cases) < n:
        for name in names:
            cases.extend(getattr(gen, name)(rng))
            if len(cases) >= n:
                break
    return cases


@dataclass
class Outcome:
    case: Case
    status: int | None  # None: the connection was closed without a response
    body: bytes
    seconds: float


def send_raw(url: str, case: Case, timeout: float) -> Outcome:
    host, port = url.split("//")[1].split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try:
            if case.trickle:
                for i in range(len(case.raw)):
                    s.sendall(case.raw[i:i + 1])
                    time.sleep(case.trickle)
                    if time.monotonic() - t0 > timeout:
                        break
            else:
                s.sendall(case.raw)
        except OSError:  # the server closed on us mid-send: a refusal, not a hang
            pass
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data and _complete(data):
                    break
        except (socket.timeout, OSError):
            pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    return Outcome(case, status, body, time.monotonic() - t0)


def _complete(data: bytes) -> bool:
    head, body = data.split(b"\r\n\r\n", 1)
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def run(url: str, cases: list[Case], timeout: float = 30.0) -> list[Outcome]:
    """Send every case; raw-socket cases (slow bodies, lying headers) run side by side in threads,
    since each may wait out one of the server's timeouts."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    out = []
    with ThreadPoolExecutor(8) as pool, httpx.Client(base_url=url, timeout=timeout) as client:
        raw = [pool.submit(send_raw, url, c, timeout) for c in cases if c.raw is not None]
        for case in (c for c in cases if c.raw is None):
            t0 = time.monotonic()
            try:
                r = client.request(case.method, case.path, **case.kwargs)
                out.append(Outcome(case, r.status_code, r.content, time.monotonic() - t0))
            except httpx.RemoteProtocolError:  # closed mid-request (an oversize body refused early)
                out.append(Outcome(case, None, b"", time.monotonic() - t0))
        out.extend(f.result() for f in raw)
    return out


def problems(outcomes: list[Outcome], hang_s: float) -> list[str]:
    """What is wrong with the answers: 5xx, hangs, errors without the JSON shape, nulls in a 200."""
    bad = []
    for o in outcomes:
        where = f"{o.case.family} {o.case.method} {o.case.path}"
        if o.seconds > hang_s:
            bad.append(f"{where}: took {o.seconds:.1f} s")
        if o.status is None:
            if o.case.family not in ("oversize", "headers", "slow"):
                bad.append(f"{where}: connection closed without an answer")
            continue
        if o.status >= 500:
            bad.append(f"{where}: {o.status} {o.body[:200]!r}")
        elif o.status >= 400:
            try:
                err = json.loads(o.body)
                assert isinstance(err, dict) and isinstance(err.get("error"), str) and isinstance(err.get("detail"), str)
            except Exception:  # noqa: BLE001
                bad.append(f"{where}: {o.status} without the JSON error shape: {o.body[:200]!r}")
        elif o.body[:1] == b"{" and b"null" in o.body:
            if _has_null_number(json.loads(o.body)):
                bad.append(f"{where}: 200 with a null number: {o.body[:200]!r}")
    return bad


def _has_null_number(v) -> bool:
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            for k, c in x.items():
                if c is None and k in ("probability", "similarity", "score"):
                    return True
                stack.append(c)
        elif isinstance(x, list):
            if any(c is None for c in x) and any(isinstance(c, (int, float)) for c in x):
                return True
            stack.extend(x)
    return False


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def probe(client) -> dict:
    """A normal request's answer, to compare before and after the hostile set."""
    pts = np.random.default_rng(0).normal(size=(512, 3)).tolist()
    r = client.post("/v1/classify", json={"points": pts, "k": 3})
    r.raise_for_status()
    return r.json()
