"""The shape index at scale: build, open, search, filter, disk and memory, on clustered vectors.

    python bench/bench_index.py --n 1000000 --json bench/results/index.json

Vectors: ``--clusters`` random unit centres, each vector its centre plus Gaussian noise (``--spread``),
unit-normalised, so neighbours are many and close, as embeddings of a parts library are. Queries come
from the same mixture but are not in the index. Ground truth is an exact inner-product scan.

Per backend (a FAISS ``ShapeIndex`` directory; Milvus Lite with ``--milvus-n``): build time, open time
of the saved index in a fresh process and that process's resident memory, disk per file against the
raw vectors, then in that process: recall@10 and p50/p95 ms of one-query searches for each
``--ef`` value (FAISS HNSW; Milvus FLAT is exact and has no such knob), and a metadata-filtered search
that 2 % of shapes match (``category`` takes 50 values), with its recall against an exact scan of the
matching vectors. All figures are for one vector field: an index with a shape field holds two.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CATEGORIES = 50  # one category value is 2 % of the shapes


def vectors(n: int, dim: int, clusters: int, spread: float, seed: int, start: int = 0) -> np.ndarray:
    """Rows start..start+n of a fixed clustered set (a piece's noise is seeded by where it starts)."""
    centres = np.random.default_rng(12345).standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, start])
    rows = np.arange(start, start + n)
    v = centres[rows * 7919 % clusters] + spread / np.sqrt(dim) * rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def metadata(i: int) -> dict:
    return {"category": f"c{i % CATEGORIES:02d}", "part": i}


def exact_top(base_chunks, queries: np.ndarray, k: int, keep=None) -> np.ndarray:
    """Exact top-k row numbers by inner product, streaming over (start, chunk) pieces."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start, chunk in base_chunks:
        rows = np.arange(start, start + len(chunk))
        if keep is not None:
            mask = keep(rows)
            rows, chunk = rows[mask], chunk[mask]
        s = queries @ chunk.T
        best_s, best_i = np.concatenate([best_s, s], 1), np.concatenate([best_i, np.broadcast_to(rows, s.shape)], 1)
        top = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, top, 1), np.take_along_axis(best_i, top, 1)
    return best_i


def recall(found: list[list[str]], truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len({int(h) for h in f[:k]} & set(t.tolist())) / k for f, t in zip(found, truth)]))


def disk(path: Path) -> dict:
    files = {p.name: p.stat().st_size for p in path.rglob("*") if p.is_file()}
    return {"total_bytes": sum(files.values()), "files": dict(sorted(files.items(), key=lambda kv: -kv[1])[:8])}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_backend(backend: str, location: str, dim: int):
    if backend == "faiss":
        from recon_serve.index import ShapeIndex
        return ShapeIndex.open(location)
    from recon_serve.index.milvus_index import MilvusIndex
    return MilvusIndex(location, dim=dim)


def build(backend: str, location: str, args, n: int, out) -> None:
    from tqdm import tqdm

    if backend == "faiss":
        from recon_serve.index import ShapeIndex
        ix = ShapeIndex(location, dim=args.dim, hnsw_m=args.m, ef_construction=args.ef_construction)
    else:
        from recon_serve.index.milvus_index import MilvusIndex
        ix = MilvusIndex(location, dim=args.dim)
    t0 = time.perf_counter()
    with tqdm(total=n, desc=f"build {backend}", unit="vec", mininterval=10) as bar:
        for start in range(0, n, args.batch):
            m = min(args.batch, n - start)
            ix.add_many([str(i) for i in range(start, start + m)], vectors(m, args.dim, args.clusters, args.spread, 0, start),
                        [metadata(i) for i in range(start, start + m)])
            bar.update(m)
    ix.close()
    out.put({"build_s": round(time.perf_counter() - t0, 1), "rss_mb_build_peak": round(peak_rss_mb(), 1),
             "loadavg_after_build": os.getloadavg()})


def in_process(target, *args) -> dict:
    """Run target(*args, queue) in a fresh process (Milvus Lite allows one process per file) and return what it put."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, out))
    p.start()
    while True:
        try:
            return out.get(timeout=5)
        except Exception:
            if not p.is_alive():
                raise RuntimeError(f"{target.__name__} failed (exit code {p.exitcode}); see its traceback above")


def measure(backend: str, location: str, dim: int, efs: list[int], queries, truth, ftruth, out) -> None:
    """Runs in a fresh process: open time and memory are those of a process holding only the index."""
    import dataclasses

    base = rss_mb()
    t0 = time.perf_counter()
    ix = open_backend(backend, location, dim)
    res = {"open_s": round(time.perf_counter() - t0, 2), "rss_mb_after_open": round(rss_mb() - base, 1),
           "kind": ix.kind, "n": len(ix), "sweep": []}

    def timed(fn, qs):
        found, ms = [], []
        for q in qs:
            t = time.perf_counter()
            hits = fn(q)
            ms.append((time.perf_counter() - t) * 1e3)
            found.append([h.id for h in hits])
        return found, {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}

    for ef in (efs if backend == "faiss" and ix.kind == "hnsw" else [None]):
        if ef is not None:
            ix.settings = dataclasses.replace(ix.settings, ef_search=ef)
        timed(lambda q: ix.search(q, k=10), queries[:5])  # warm
        found, lat = timed(lambda q: ix.search(q, k=10), queries)
        res["sweep"].append({"ef_search": ef, "recall_at_10": round(recall(found, truth), 4), **lat})
        print(f"  {backend} ef_search={ef}: recall@10 {res['sweep'][-1]['recall_at_10']:.4f}, "
              f"p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms", flush=True)
    f = {"category": "c07"}
    fq = queries[: len(ftruth)]
    timed(lambda q: ix.search(q, k=10, filter=f), fq[:3])
    found, lat = timed(lambda q: ix.search(q, k=10, filter=f), fq)
    res["filtered"] = {"filter": f, "match_fraction": 1 / CATEGORIES, "recall_at_10": round(recall(found, ftruth), 4), **lat}
    print(f"  {backend} filtered (2 %): recall@10 {res['filtered']['recall_at_10']:.4f}, p50 {lat['p50_ms']:.2f} ms",
          flush=True)
    res["rss_mb_after_searches"] = round(rss_mb() - base, 1)
    ix.close()
    out.put(res)


def run_backend(backend: str, location: str, args, n: int, queries) -> dict:
    chunks = lambda: ((s, vectors(min(args.batch, n - s), args.dim, args.clusters, args.spread, 0, s))  # noqa: E731
                      for s in range(0, n, args.batch))  # the build's pieces: a row's noise depends on its piece
    truth = exact_top(chunks(), queries, 10)
    ftruth = exact_top(chunks(), queries[: min(args.filtered_queries, len(queries))], 10, keep=lambda r: r % CATEGORIES == 7)
    record = Path(location).parent / f"{backend}.build.json"  # a kept --dir is measured again without rebuilding
    if args.dir and record.is_file() and json.loads(record.read_text()).get("n") == n:
        built = json.loads(record.read_text())["built"]
        print(f"{backend}: reusing the index built in {location} ({built['build_s']} s then)")
    else:
        built = in_process(build, backend, location, args, n)
        record.write_text(json.dumps({"n": n, "built": built}))
    size = disk(Path(location).parent if backend == "milvus" else Path(location))
    res = in_process(measure, backend, location, args.dim, args.ef, queries, truth, ftruth)
    raw = n * args.dim * 4
    return {"backend": backend, "n": n, **built, "raw_vector_bytes": raw,
            "disk": size, "disk_over_raw": round(size["total_bytes"] / raw, 2), **res}


def main() -> None:
    from recon_serve.index.store import Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=1.0, help="noise norm relative to a centre's (1.0: cosine ~0.5 to it)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--filtered-queries", type=int, default=50)
    ap.add_argument("--ef", default="16,32,64,128,256", help="ef_search values for the FAISS HNSW sweep")
    ap.add_argument("--m", type=int, default=Settings.hnsw_m, help="HNSW M (default: the index's)")
    ap.add_argument("--ef-construction", type=int, default=Settings.ef_construction)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--milvus-n", type=int, default=0, help="also Milvus Lite (embedded, FLAT) on this many vectors")
    ap.add_argument("--milvus-queries", type=int, default=50, help="of the queries, how many Milvus Lite answers")
    ap.add_argument("--dir", help="where indexes are built and kept (a later run with the same --dir and --n "
                    "measures them again without rebuilding); default: a temp dir, removed after")
    ap.add_argument("--json")
    args = ap.parse_args()
    args.ef = [int(e) for e in args.ef.split(",")]

    import faiss
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_index_"))
    work.mkdir(parents=True, exist_ok=True)
    queries = vectors(args.queries, args.dim, args.clusters, args.spread, 1)
    rows = []
    try:
        rows.append(run_backend("faiss", str(work / "faiss"), args, args.n, queries))
        if args.milvus_n:
            (work / "milvus").mkdir(exist_ok=True)
            rows.append(run_backend("milvus", str(work / "milvus" / "milvus.db"), args, args.milvus_n,
                                    queries[: args.milvus_queries]))
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        print(f"{r['backend']} n={r['n']:,}: build {r['build_s']} s, open {r['open_s']} s, "
              f"disk {r['disk']['total_bytes'] / 2**30:.2f} GiB ({r['disk_over_raw']}x the vectors), "
              f"memory {r['rss_mb_after_searches']:.0f} MB")
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "loadavg": os.getloadavg(), "faiss": faiss.__version__},
              "settings": {k: v for k, v in vars(args).items() if k not in ("json", "dir")}, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
