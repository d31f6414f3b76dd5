"""recon-serve under load: many concurrent clients of mixed traffic, then a check that nothing acknowledged was lost.

One run, one server (`recon-serve serve`, ORT backend, tests/server_util.py's launcher, a fresh index):

1. --clients concurrent clients (default 50; asyncio + httpx, one keep-alive connection each) send
   requests back to back for --seconds (default 60), each picking an operation at random:
     classify 40 %    POST /v1/classify, a ModelNet10 test cloud (1,024 points, JSON)
     text 25 %        POST /v1/search/text, "a <class>" over the index being filled
     zero-shot 15 %   POST /v1/zero-shot, the cloud against the 10 ModelNet10 class names
     add 20 %         POST /v1/shapes, the cloud under a fresh id with metadata
   Reported per operation: requests, requests/s, p50 / p95 / p99 ms, and errors by status.
2. Halfway through, one extra request asks zero-shot over 256 fresh labels (each a different
   32-character phrase, so nothing is cached). Requests that started while it was in flight are
   compared with those that finished before it began: the added delay is their p50 and p95 minus
   the baseline's (goal: under 1 s; the text encoder works on 4 labels per lock hold).
3. Every acknowledged add (201) is read back with GET /v1/shapes/{id}: missing ones are counted.

Run:  python bench/bench_load.py [--clients 50] [--seconds 60] [--checkpoint PATH] [--json bench/results/load.json]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from bench_encoder import cpu_model  # noqa: E402
from bench_export import write_result  # noqa: E402
from server_util import Server  # noqa: E402

MIX = (("classify", 0.40), ("text", 0.25), ("zero-shot", 0.15), ("add", 0.20))
CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]


def _clouds(data_root: Path, n: int = 40) -> list[tuple[str, list]]:
    from recon_serve.data.readers import load_points

    files = [(c, f) for c in CLASSES for f in sorted((data_root / "modelnet10" / c / "test").glob("*.pcd"))[:4]][:n]
    if not files:
        raise SystemExit(f"no ModelNet10 test files under {data_root}")
    return [(c, np.round(load_points(f, 1024), 5).tolist()) for c, f in files]


def _pct(xs, q) -> float | None:
    return float(np.percentile(xs, q) * 1000) if len(xs) else None


async def _client(i, url, clouds, until, log, acked, rng):
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        n = 0
        while time.monotonic() < until:
            op = rng.choices([m[0] for m in MIX], [m[1] for m in MIX])[0]
            cls, pts = rng.choice(clouds)
            t0 = time.monotonic()
            try:
                if op == "classify":
                    r = await c.post("/v1/classify", json={"points": pts})
                elif op == "text":
                    r = await c.post("/v1/search/text", json={"text": f"a {rng.choice(CLASSES)}", "k": 10})
                elif op == "zero-shot":
                    r = await c.post("/v1/zero-shot", json={"points": pts, "labels": CLASSES})
                else:
                    sid = f"load/{i}/{n}"
                    r = await c.post("/v1/shapes", json={"id": sid, "points": pts, "metadata": {"category": cls}})
                    if r.status_code == 201:
                        acked.append(sid)
                status = r.status_code
            except httpx.HTTPError as e:
                status = type(e).__name__
            log.append((op, t0, time.monotonic(), status))
            n += 1


async def _big_zero_shot(url, cloud, at, window):
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    labels = [f"thing number {i:03d} with parts xyz"[:32] for i in range(256)]
    async with httpx.AsyncClient(base_url=url, timeout=300) as c:
        t0 = time.monotonic()
        r = await c.post("/v1/zero-shot", json={"points": cloud, "labels": labels})
        window.update(start=t0, end=time.monotonic(), status=r.status_code)


async def _load(url, clouds, clients, seconds, seed):
    log, acked, window = [], [], {}
    until = time.monotonic() + seconds
    rng = random.Random(seed)
    tasks = [_client(i, url, clouds, until, log, acked, random.Random(rng.random())) for i in range(clients)]
    tasks.append(_big_zero_shot(url, clouds[0][1], time.monotonic() + seconds / 2, window))
    t0 = time.monotonic()
    await asyncio.gather(*tasks)
    return log, acked, window, time.monotonic() - t0


def _summary(log, wall):
    out = {}
    for op in [m[0] for m in MIX]:
        rows = [r for r in log if r[0] == op]
        ok = [r[2] - r[1] for r in rows if r[3] in (200, 201)]
        errors: dict[str, int] = {}
        for r in rows:
            if r[3] not in (200, 201):
                errors[str(r[3])] = errors.get(str(r[3]), 0) + 1
        out[op] = {"requests": len(rows), "per_s": round(len(rows) / wall, 2), "p50_ms": _pct(ok, 50),
                   "p95_ms": _pct(ok, 95), "p99_ms": _pct(ok, 99), "errors": errors}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "default" / "recon_default.pt"))
    ap.add_argument("--data", default=os.environ.get("RECON_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="bench/results/load.json")
    args = ap.parse_args(argv)

    clouds = _clouds(Path(args.data))
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = Path(os.environ.get("RECON_CACHE_DIR", Path.home() / ".cache" / "recon-serve" / "onnx"))
        server = Server(Path(args.checkpoint), tmp / "index", cache, tmp / "server.log", ready_timeout=600, threads=args.threads)
        try:
            with httpx.Client(base_url=server.url, timeout=60) as c:  # warm up: model, text encoder, index
                c.post("/v1/classify", json={"points": clouds[0][1]}).raise_for_status()
                c.post("/v1/zero-shot", json={"points": clouds[0][1], "labels": CLASSES}).raise_for_status()
                c.post("/v1/search/text", json={"text": "a chair"}).raise_for_status()
            print(f"{args.clients} clients, {args.seconds:g} s of mixed traffic against {server.url} ...", flush=True)
            log, acked, window, wall = asyncio.run(_load(server.url, clouds, args.clients, args.seconds, args.seed))
            with httpx.Client(base_url=server.url, timeout=60) as c:
                missing = [sid for sid in acked if c.get(f"/v1/shapes/{sid}").status_code != 200]
        finally:
            server.stop()

    summary = _summary(log, wall)
    before = [r[2] - r[1] for r in log if r[2] < window.get("start", 0) and r[3] in (200, 201)]
    during = [r[2] - r[1] for r in log if window.get("start", 1e18) <= r[1] <= window.get("end", 0) and r[3] in (200, 201)]
    big = {"seconds": round(window["end"] - window["start"], 2), "status": window["status"],
           "requests_during": len(during),
           "added_p50_ms": None if not during or not before else _pct(during, 50) - _pct(before, 50),
           "added_p95_ms": None if not during or not before else _pct(during, 95) - _pct(before, 95)}
    total = len(log)
    errors = sum(sum(v["errors"].values()) for v in summary.values())
    print(f"\n{'operation':<10} {'requests':>8} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  errors")
    for op, v in summary.items():
        f = lambda x: f"{x:8.0f}" if x is not None else "       -"  # noqa: E731
        print(f"{op:<10} {v['requests']:>8} {v['per_s']:>7.2f} {f(v['p50_ms'])} {f(v['p95_ms'])} {f(v['p99_ms'])}  {v['errors'] or 0}")
    print(f"all: {total} requests in {wall:.1f} s ({total / wall:.1f}/s), {errors} errors")
    print(f"256-label zero-shot: {big['seconds']} s (status {big['status']}); {big['requests_during']} requests "
          f"started while it ran: p50 {big['added_p50_ms']:+.0f} ms, p95 {big['added_p95_ms']:+.0f} ms against the baseline"
          if big["added_p50_ms"] is not None else f"256-label zero-shot: {big}")
    print(f"acknowledged adds: {len(acked)}, missing afterwards: {len(missing)}")
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg_start": load0, "loadavg_end": os.getloadavg()}
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "clients": args.clients,
              "seconds": args.seconds, "wall_s": wall, "checkpoint": Path(args.checkpoint).name, "threads": args.threads,
              "requests": total, "requests_per_s": total / wall, "errors": errors, "by_operation": summary,
              "big_zero_shot": big, "acknowledged_adds": len(acked), "missing_adds": len(missing), "machine": machine}
    write_result(args.json, result, machine)


if __name__ == "__main__":
    main()
