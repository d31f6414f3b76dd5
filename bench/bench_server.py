"""recon-serve over HTTP vs bare in-process inference: classify latency, server overhead, throughput.

One run, one server (`recon-serve serve`, ORT backend, started on a free port like the tests do),
the same model in this process on the same exported graph and thread count (--threads, default 2):

1. Latency, round-robin after warm-up (every runner called once per round, each round in a seeded
   random order, so machine noise hits all alike and no runner always follows the same one),
   --repeats rounds; with --block N each runner's turn is one untimed call and N timed ones in a
   row (a steady stream of one kind of request, rather than each call right after another
   runner's); p50 / p95 / mean ms of
     bare ORT          session.run on the graph the server runs for classify (the global graph, no part
                       head; int8 with --int8) from its ONNX cache, batch 1, on the already prepared
                       cloud (num_points from the model card)
     in-proc points    what the server does for a JSON body, in this process: parse_shape_json (the
                       server's parser) -> decode_points_json -> prepare (sample + normalise) -> session.run
     HTTP points       POST /v1/classify, JSON body {"points": 1,024 x 3} (encoded once, before timing),
                       from RawClient: HTTP/1.1 on one keep-alive socket, the request's bytes built once,
                       the response read by its Content-Length (what a load generator such as wrk does)
     HTTP points http.client   the same request from the standard library's http.client
     HTTP points httpx the same request from httpx (this process), the Python client most users have
     HTTP points, no inline    with --compare-inline: the same request (RawClient) to a second server
                       started with RECON_INLINE_MAX_POINTS=0, whose model calls all run on the batcher's
                       worker thread (the default server runs a lone request's call on its event loop)
     in-proc mesh      the server's mesh pipeline without HTTP: decode in a Decoder worker process (as the
                       server does) -> prepare (area-weighted surface sample + normalise) -> session.run
     HTTP mesh         POST /v1/classify, multipart upload of a generated mesh: an icosphere subdivided
                       to 81,920 faces (--subdivisions 6; 7 gives 327,680), bumped, binary STL
   Server overhead for point input = p50(HTTP points) / p50(bare ORT) - 1, in percent (goal <= 10%,
   issue 14). It includes the client (RawClient, this process), the kernel's loopback, parsing,
   preprocessing and the batcher (which waits up to max_wait_ms, default 5 ms, only while other
   requests are on their way: a lone request goes straight to the model; --max-wait-ms sets the window).
2. Throughput of HTTP points at 1, 8 and 32 concurrent clients (--concurrency): each client is a
   thread with its own keep-alive httpx.Client sending requests back to back; requests/s = all
   requests / wall time. Levels are interleaved over --rounds rounds (default 3), about
   --requests per level in all (default 4 x repeats, rounded up to whole rounds of equal work per
   client); one untimed burst per level warms up first. Mean batch size comes from the server's
   /metrics (recon_batch_size). The clients share the machine with the server (Python threads: on a
   2-core machine they take CPU the server could use).

Model: --checkpoint, else models/default/recon_default.pt when it exists, else the `tiny` config with
random weights (seed 0, 10 classes); the output says which. The graph is exported into the server's
ONNX cache (RECON_CACHE_DIR, else ~/.cache/recon-serve/onnx) once; later runs reuse it.

Run:  python bench/bench_server.py [--checkpoint PATH] [--repeats 50] [--block 1] [--threads 2] [--int8]
                                   [--compare-inline] [--max-batch N] [--max-wait-ms MS]
                                   [--json bench/results/server.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import socket
import sys
import tempfile
import threading
import time
import warnings
from http.client import HTTPConnection, RemoteDisconnected
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from bench_encoder import cpu_model  # noqa: E402
from bench_export import round_robin, write_result  # noqa: E402
from server_util import Server  # noqa: E402  (tests/server_util.py: the tests' server launcher)

from recon_serve.model.factory import DEFAULT_CHECKPOINT  # noqa: E402

NUM_POINTS = 1024
WARMUP = 5
OVERHEAD_GOAL_PCT = 10.0
CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]


# ---- inputs -------------------------------------------------------------------------------------
def resolve_checkpoint(checkpoint: str | None, tmp: Path) -> tuple[Path, str]:
    if checkpoint or DEFAULT_CHECKPOINT.is_file():
        path = Path(checkpoint or DEFAULT_CHECKPOINT)
        if not path.is_file():
            raise SystemExit(f"{path}: no such checkpoint")
        return path, f"checkpoint {path}"
    import torch

    from recon_serve.model.checkpoint import save_checkpoint
    from recon_serve.model.factory import create_model

    torch.manual_seed(0)
    model, _ = create_model("tiny", num_classes=len(CLASSES))
    path = tmp / "tiny_random.pt"
    save_checkpoint(path, model.eval(), class_names=CLASSES)
    return path, f"tiny config, random weights, 10 classes ({DEFAULT_CHECKPOINT} not found)"


def make_mesh(path: Path, subdivisions: int) -> dict:
    """A bumpy icosphere (20 * 4**subdivisions faces) as binary STL."""
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    v = mesh.vertices
    bump = 1 + 0.15 * np.sin(5 * v[:, 0]) * np.sin(4 * v[:, 1]) + 0.1 * np.cos(6 * v[:, 2])
    mesh = trimesh.Trimesh(v * bump[:, None] * [1.0, 0.7, 1.3], mesh.faces, process=False)
    mesh.export(path, file_type="stl")
    return {"file": path.name, "format": "binary STL", "faces": int(len(mesh.faces)),
            "vertices": int(len(mesh.vertices)), "bytes": path.stat().st_size}


# ---- timing -------------------------------------------------------------------------------------
class RawClient:
    """HTTP/1.1 on one keep-alive socket, the way a load generator (wrk, ab) drives a server: the
    request's bytes built once, then per call one send, the status line and headers up to the blank
    line, and Content-Length bytes of body. It leaves out what http.client adds in Python per
    response (header objects, a buffered reader), so the overhead measured is the server's."""

    def __init__(self, port: int, path: str, body: bytes, content_type: str = "application/json"):
        self.port = port
        self.request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        self.sock = None

    def _connect(self) -> None:
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=300)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self) -> tuple[int, bytes]:
        """(status, body); reconnects once when uvicorn closed the idle connection (5 s keep-alive)."""
        if self.sock is None:
            self._connect()
        try:
            return self._exchange()
        except ConnectionError:
            self._connect()
            return self._exchange()

    def _exchange(self) -> tuple[int, bytes]:
        self.sock.sendall(self.request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = dict(line.split(b":", 1) for line in lines[1:])
        length = int(next(v for k, v in fields.items() if k.strip().lower() == b"content-length"))
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the server closed the connection mid-body")
            body += chunk
        return int(lines[0].split()[1]), body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def latency_stats(seconds: list[float]) -> dict:
    t = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(t, 50)), "p95_ms": float(np.percentile(t, 95)),
            "mean_ms": float(t.mean()), "n": int(len(t))}


def batch_metrics(url: str) -> tuple[float, float]:
    """(recon_batch_size_sum, _count) from the server's /metrics."""
    total = count = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("recon_batch_size_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("recon_batch_size_count"):
            count = float(line.rsplit(" ", 1)[1])
    return total, count


def burst(clients: list[httpx.Client], per_client: int, body: bytes) -> float:
    """Every client sends `per_client` classify requests back to back, all at once; wall seconds."""
    start = threading.Barrier(len(clients) + 1)
    errors: list[str] = []

    def work(c: httpx.Client) -> None:
        start.wait()
        for _ in range(per_client):
            r = c.post("/v1/classify", content=body, headers={"content-type": "application/json"})
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return seconds


def throughput(url: str, body: bytes, levels: list[int], requests: int, rounds: int) -> dict:
    clients = {c: [httpx.Client(base_url=url, timeout=300) for _ in range(c)] for c in levels}
    per_client = {c: max(1, math.ceil(requests / rounds / c)) for c in levels}
    res = {c: {"requests": 0, "seconds": 0.0, "batch_sum": 0.0, "batches": 0.0} for c in levels}
    try:
        for c in levels:  # warm-up: every level once, untimed (ORT meets each batch size once)
            burst(clients[c], 1, body)
        for r in range(rounds):
            for c in levels[r % len(levels):] + levels[:r % len(levels)]:
                s0, n0 = batch_metrics(url)
                res[c]["seconds"] += burst(clients[c], per_client[c], body)
                s1, n1 = batch_metrics(url)
                res[c]["requests"] += per_client[c] * c
                res[c]["batch_sum"] += s1 - s0
                res[c]["batches"] += n1 - n0
    finally:
        for cs in clients.values():
            for cl in cs:
                cl.close()
    return {str(c): {"concurrency": c, "requests": v["requests"], "seconds": v["seconds"],
                     "requests_per_s": v["requests"] / v["seconds"],
                     "mean_batch": v["batch_sum"] / v["batches"] if v["batches"] else None} for c, v in res.items()}


# ---- main ---------------------------------------------------------------------------------------
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help=f"default: {DEFAULT_CHECKPOINT} if it exists, else tiny config")
    ap.add_argument("--repeats", type=int, default=50, help="latency rounds")
    ap.add_argument("--block", type=int, default=1, help="latency calls in a row per runner and round (1: one call "
                    "after another runner's; N > 1: one untimed call, then N timed: a steady stream)")
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op threads, server and in-process alike")
    ap.add_argument("--max-batch", type=int, default=None, help="server RECON_MAX_BATCH (default: the server's, 16)")
    ap.add_argument("--max-wait-ms", type=float, default=None, help="server RECON_MAX_WAIT_MS (default: the server's, 5)")
    ap.add_argument("--compare-inline", action="store_true",
                    help="a second server with RECON_INLINE_MAX_POINTS=0 (every model call on the batcher's worker)")
    ap.add_argument("--int8", action="store_true", help="server RECON_INT8=1, bare ORT on the same int8 graph")
    ap.add_argument("--subdivisions", type=int, default=6, help="icosphere subdivisions: faces = 20 * 4**s")
    ap.add_argument("--concurrency", default="1,8,32", help="client counts for the throughput runs")
    ap.add_argument("--requests", type=int, default=None, help="throughput requests per level (default 4 x repeats)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    ap.add_argument("--json", default="bench/results/server.json")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    requests = args.requests or 4 * args.repeats
    # The dynamo exporter's chatter (first export of a checkpoint) says nothing about speed.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="# The axis name")
    load_start = os.getloadavg()

    import onnxruntime

    from recon_serve.api.validation import parse_shape_json
    from recon_serve.backends.ort_backend import export_cached
    from recon_serve.export.onnx import ort_session
    from recon_serve.geometry.decode import Decoder, decode_points_json
    from recon_serve.geometry.preprocess import prepare
    from recon_serve.settings import Settings

    settings = Settings.from_env()
    cache = Path(settings.cache_dir)
    server_env = {"threads": args.threads, "int8": int(args.int8)}
    if args.max_batch is not None:
        server_env["max_batch"] = args.max_batch
    if args.max_wait_ms is not None:
        server_env["max_wait_ms"] = args.max_wait_ms
    max_batch = args.max_batch if args.max_batch is not None else settings.max_batch
    max_wait_ms = args.max_wait_ms if args.max_wait_ms is not None else settings.max_wait_ms

    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmpdir:
        tmp = Path(tmpdir)
        checkpoint, described = resolve_checkpoint(args.checkpoint, tmp)
        t0 = time.perf_counter()
        vdir = export_cached(checkpoint, cache, "global-int8" if args.int8 else "global")  # the server's classify graph
        card = json.loads((vdir / "model_card.json").read_text())
        print(f"model: {described} (config {card.get('config_name')}, version {card['version']}, "
              f"{card['onnx']['graph']} graph {vdir / 'model.onnx'}, {card['onnx'].get('mode')}; "
              f"ready in {time.perf_counter() - t0:.1f} s)")
        session = ort_session(vdir / "model.onnx", threads=args.threads)
        outputs = [o.name for o in session.get_outputs()]
        n_model = int(card.get("num_points") or NUM_POINTS)

        cloud = np.random.default_rng(0).normal(size=(NUM_POINTS, 3)).astype(np.float32)
        body = json.dumps({"points": cloud.tolist()}).encode()
        prepared = prepare(cloud, n_model).points[None]
        mesh = make_mesh(tmp / "bumpy_sphere.stl", args.subdivisions)
        mesh_bytes = (tmp / mesh["file"]).read_bytes()
        print(f"inputs: JSON {NUM_POINTS} points ({len(body) / 1e3:.0f} kB, model samples {n_model}); "
              f"mesh {mesh['faces']:,} faces, {mesh['vertices']:,} vertices, {mesh['bytes'] / 1e6:.1f} MB {mesh['format']}")

        server = Server(checkpoint, tmp / "index", cache, tmp / "server.log", ready_timeout=600, **server_env)
        print(f"server: {server.url} (pid {server.pid}), {args.threads} threads, max_batch {max_batch}, "
              f"max_wait_ms {max_wait_ms}; {args.repeats} repeats", flush=True)
        http = httpx.Client(base_url=server.url, timeout=300)
        raw = RawClient(server.port, "/v1/classify", body)
        worker_server = (Server(checkpoint, tmp / "index-worker", cache, tmp / "server-worker.log", ready_timeout=600,
                                inline_max_points=0, **server_env) if args.compare_inline else None)
        raw_worker = RawClient(worker_server.port, "/v1/classify", body) if worker_server else None
        stdlib = HTTPConnection("127.0.0.1", server.port, timeout=300)
        decoder = Decoder(settings.decode_limits, workers=settings.decode_workers)
        try:
            served_version = http.get("/v1/models").json()["model_version"]
            if served_version != card["version"]:
                raise RuntimeError(f"server runs model {served_version}, this process {card['version']}")

            def bare():
                return session.run(outputs, {"points": prepared})

            def inproc_points():
                pts = decode_points_json(parse_shape_json(body)["points"])
                return session.run(outputs, {"points": prepare(pts, n_model).points[None]})

            def stdlib_points(conn):
                try:
                    conn.request("POST", "/v1/classify", body=body, headers={"content-type": "application/json"})
                    r = conn.getresponse()
                except (BrokenPipeError, ConnectionResetError, RemoteDisconnected):  # idle past uvicorn's
                    conn.close()  # keep-alive timeout (5 s; --block turns are long): reconnect, once
                    conn.request("POST", "/v1/classify", body=body, headers={"content-type": "application/json"})
                    r = conn.getresponse()
                data = r.read()
                if r.status != 200:
                    raise RuntimeError(f"classify (points): {r.status} {data[:300]!r}")
                return json.loads(data)

            def http_points():
                status, data = raw.call()
                if status != 200:
                    raise RuntimeError(f"classify (points, raw socket): {status} {data[:300]!r}")
                return json.loads(data)

            def http_points_worker():
                status, data = raw_worker.call()
                if status != 200:
                    raise RuntimeError(f"classify (points, no-inline server): {status} {data[:300]!r}")
                return json.loads(data)

            def http_points_stdlib():
                return stdlib_points(stdlib)

            def http_points_httpx():
                r = http.post("/v1/classify", content=body, headers={"content-type": "application/json"})
                if r.status_code != 200:
                    raise RuntimeError(f"classify (points, httpx): {r.status_code} {r.text[:300]}")
                return r.json()

            def inproc_mesh():
                shape = decoder.decode(mesh["file"], mesh_bytes)
                return session.run(outputs, {"points": prepare(shape, n_model).points[None]})

            def http_mesh():
                r = http.post("/v1/classify", files={"file": (mesh["file"], mesh_bytes)})
                if r.status_code != 200:
                    raise RuntimeError(f"classify (mesh): {r.status_code} {r.text[:300]}")
                return r.json()

            # the served answer is the in-process one (same graph, same preprocessing)
            logits = dict(zip(outputs, bare())).get("logits")
            served = http_points()["labels"]
            check = None
            if logits is not None and card.get("class_names"):
                p = np.exp(logits[0] - logits[0].max())
                p /= p.sum()
                check = float(max(abs(l["probability"] - p[card["class_names"].index(l["label"])]) for l in served))
                print(f"check: served vs in-process probabilities, max |diff| = {check:.1e}")

            runners = {"bare ORT": bare, "in-proc points": inproc_points, "HTTP points": http_points,
                       "HTTP points http.client": http_points_stdlib, "HTTP points httpx": http_points_httpx, "in-proc mesh": inproc_mesh, "HTTP mesh": http_mesh}
            if worker_server:
                runners["HTTP points, no inline"] = http_points_worker
            lat = {k: latency_stats(v) for k, v in round_robin(runners, args.repeats, warmup=WARMUP, block=args.block).items()}
            tput = throughput(server.url, body, levels, requests, args.rounds)
        finally:
            http.close()
            raw.close()
            stdlib.close()
            decoder.close()
            server.stop()
            if worker_server:
                raw_worker.close()
                worker_server.stop()

    overhead = (lat["HTTP points"]["p50_ms"] / lat["bare ORT"]["p50_ms"] - 1) * 100
    rows = [("bare ORT", "session.run, batch 1, prepared cloud"),
            ("in-proc points", "JSON parse + prepare + session.run"),
            ("HTTP points", f"POST /v1/classify, JSON {NUM_POINTS} points"),
            ("HTTP points http.client", "the same, from http.client"),
            ("HTTP points httpx", "the same, from httpx"),
            ("in-proc mesh", "decode (worker) + sample + session.run"),
            ("HTTP mesh", f"POST /v1/classify, {mesh['faces']:,}-face STL upload")]
    if "HTTP points, no inline" in lat:
        rows.insert(3, ("HTTP points, no inline", "the same, server with RECON_INLINE_MAX_POINTS=0"))
    print(f"\n{'latency':<26}{'what':<42}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}")
    for key, what in rows:
        s = lat[key]
        print(f"{key:<26}{what:<42}{s['p50_ms']:9.2f}{s['p95_ms']:9.2f}{s['mean_ms']:9.2f}")
    verdict = "meets" if overhead <= OVERHEAD_GOAL_PCT else "misses"
    print(f"server overhead, point input (p50 HTTP / p50 bare - 1): {overhead:+.1f}%  "
          f"({verdict} the goal <= {OVERHEAD_GOAL_PCT:.0f}%)")
    overhead_worker = None
    if "HTTP points, no inline" in lat:
        overhead_worker = (lat["HTTP points, no inline"]["p50_ms"] / lat["bare ORT"]["p50_ms"] - 1) * 100
        print(f"the same without the inline model call (RECON_INLINE_MAX_POINTS=0): {overhead_worker:+.1f}%")
    print(f"\n{'throughput':<16}{'clients':>8}{'requests':>10}{'seconds':>9}{'req/s':>9}{'mean batch':>12}")
    for row in tput.values():
        mb = f"{row['mean_batch']:.1f}" if row["mean_batch"] is not None else "-"
        print(f"{'HTTP points':<16}{row['concurrency']:>8}{row['requests']:>10}{row['seconds']:>9.2f}"
              f"{row['requests_per_s']:>9.1f}{mb:>12}")
    print(f"(bare ORT at batch 1: {1e3 / lat['bare ORT']['p50_ms']:.1f} shapes/s from its p50)")

    machine = dict(cpu=cpu_model(), cpu_count=os.cpu_count(), threads=args.threads,
                   onnxruntime=onnxruntime.__version__, python=platform.python_version(),
                   loadavg_start=[round(x, 2) for x in load_start], loadavg_end=[round(x, 2) for x in os.getloadavg()],
                   date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    result = {"machine": machine,
              "model": {"source": described, "version": card["version"], "config_name": card.get("config_name"),
                        "onnx_mode": card.get("onnx", {}).get("mode"), "onnx_graph": card["onnx"]["graph"],
                        "num_points": n_model},
              "server": {"backend": "onnxruntime", "threads": args.threads, "max_batch": max_batch,
                         "max_wait_ms": max_wait_ms, "int8": args.int8},
              "inputs": {"points_json": {"points": NUM_POINTS, "bytes": len(body)}, "mesh": mesh},
              "repeats": args.repeats, "block": args.block, "warmup": WARMUP, "served_vs_inprocess_max_prob_diff": check,
              "latency": lat,
              "overhead_points_p50_pct": overhead, "overhead_goal_pct": OVERHEAD_GOAL_PCT,
              "overhead_meets_goal": overhead <= OVERHEAD_GOAL_PCT,
              "overhead_points_no_inline_p50_pct": overhead_worker,
              "throughput": {"rounds": args.rounds, "levels": tput}}
    write_result(args.json, result, machine)


if __name__ == "__main__":
    main()
