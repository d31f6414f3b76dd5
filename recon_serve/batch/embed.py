"""`recon-serve embed`: embed a whole shape library into a search index, resumably and in parallel.

The job: list the files, send chunks of them to workers (each a process with its own one-thread
ONNX Runtime session and an isolated decoder, so a hostile file costs one worker a restart, never
the run), and write each finished chunk to the index, then to the manifest. A killed run resumes
where it stopped; a re-run skips files whose content hash and model version are unchanged; broken
files are recorded with the reason and listed in the report. With `engine="ray"` the same workers
run as Ray actors, on a local Ray instance or the cluster that RAY_ADDRESS names.

Outputs in the index folder: the ShapeIndex the server opens, `embed_manifest.sqlite`,
`embed_report.json` and `embeddings.parquet` (id, model_version, embedding, metadata as JSON).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon_serve.batch.sources import Manifest, SourceFile, discover

log = logging.getLogger(__name__)
MANIFEST_FILE, REPORT_FILE, PARQUET_FILE = "embed_manifest.sqlite", "embed_report.json", "embeddings.parquet"


@dataclass(frozen=True)
class JobOptions:
    n_points: int = 1024
    up_axis: str = "z"
    batch_size: int = 16
    max_file_bytes: int = 256 << 20


class EmbedWorker:
    """Hash, decode, sample and embed one chunk of files; lives in a worker process or Ray actor."""

    def __init__(self, model_dir: str, options: JobOptions):
        from recon_serve.backends.ort_backend import OrtBackend
        from recon_serve.geometry.decode import DecodeLimits, Decoder

        self.backend = OrtBackend(model_dir, cache_dir=model_dir, threads=1)
        self.model_up = (self.backend.model_card.get("config") or {}).get("up_axis") or "z"
        self.options = options
        self.decoder = Decoder(DecodeLimits(max_bytes=options.max_file_bytes), workers=1)

    def process(self, chunk: list[tuple[str, str]], skip: dict[str, str]) -> list[tuple]:
        """chunk: (id, path); skip: id -> sha256 already embedded by this model.

        Returns ("ok", id, sha, (embedding, shape embedding or None)) | ("skip", id, sha, None) |
        ("error", id, sha, reason).
        """
        from recon_serve.errors import ShapeError
        from recon_serve.geometry.preprocess import prepare

        out, ready = [], []
        for id_, path in chunk:
            sha = None
            try:
                data = Path(path).read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                if skip.get(id_) == sha:
                    out.append(("skip", id_, sha, None))
                    continue
                shape = self.decoder.decode(Path(path).name, data)
                pts = prepare(shape, self.options.n_points, up_axis=self.options.up_axis, model_up=self.model_up).points
                ready.append((id_, sha, pts))
            except ShapeError as e:
                out.append(("error", id_, sha, f"{e.code}: {e.detail}"))
            except OSError as e:
                out.append(("error", id_, sha, f"unreadable: {e}"))
        if ready:
            res = self.backend.infer(np.stack([p for _, _, p in ready]))
            emb, shp = res["embedding"], res.get("shape_embedding")
            both = emb if shp is None else np.concatenate([emb, shp], axis=1)
            bad = ~np.isfinite(both).all(axis=1) | (np.linalg.norm(emb, axis=1) == 0)
            for i, ((id_, sha, _), b) in enumerate(zip(ready, bad)):
                vecs = (emb[i], None if shp is None else shp[i])
                out.append(("error", id_, sha, "model gave a non-finite embedding") if b else ("ok", id_, sha, vecs))
        return out

    def close(self) -> None:
        self.decoder.close()
        self.backend.close()


# ---- engines: each yields the results of every chunk, in any order -------------------------

_WORKER: EmbedWorker | None = None


def _init_worker(model_dir: str, options: JobOptions) -> None:
    global _WORKER
    from recon_serve.runtime import exit_with_parent

    exit_with_parent()  # a killed job leaves no workers behind
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER = EmbedWorker(model_dir, options)


def _run_chunk(chunk, skip):
    return _WORKER.process(chunk, skip)


def _local(chunks, skips, model_dir: str, options: JobOptions, workers: int):
    if workers <= 1:  # in this process: no pickling, and the 1-worker baseline of the benchmark
        worker = EmbedWorker(model_dir, options)
        try:
            for chunk, skip in zip(chunks, skips):
                yield worker.process(chunk, skip)
        finally:
            worker.close()
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # spawn: workers must not inherit the index's lock file or the parent's threads
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(model_dir, options)) as pool:
        pending, todo = set(), iter(zip(chunks, skips))
        while True:
            while len(pending) < 2 * workers:  # a bounded window keeps memory flat on huge libraries
                nxt = next(todo, None)
                if nxt is None:
                    break
                pending.add(pool.submit(_run_chunk, *nxt))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()


def _ray(chunks, skips, model_dir: str, options: JobOptions, workers: int):
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise ValueError("--engine ray needs Ray: pip install 'recon-serve[ray]'") from None

    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS")
        ray.init(address=address, **({} if address else {"num_cpus": workers}),
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        actor = ray.remote(num_cpus=1)(EmbedWorker)
        pool = ActorPool([actor.remote(model_dir, options) for _ in range(workers)])
        yield from pool.map_unordered(lambda a, job: a.process.remote(*job), zip(chunks, skips))
    finally:
        if started:
            ray.shutdown()


ENGINES = {"local": _local, "ray": _ray}


# ---- the job --------------------------------------------------------------------------------

def embed_library(source, index_dir, *, checkpoint=None, workers: int | None = None, engine: str = "local",
                  metadata_csv=None, reindex: bool = False, prune: bool = False, options: JobOptions = JobOptions(),
                  progress: bool = True, cache_dir=None, state_dir=None) -> dict:
    """Embed every shape file of `source` into the index at `index_dir` (a folder, or a milvus:// URI
    whose manifest and report go to `state_dir`, default ./embed-state); returns the report dict.

    source None: the source (and CSV) the manifest recorded. reindex: embed everything again (after
    a model change). prune: drop ids whose files are gone from the source.
    """
    from tqdm import tqdm

    from recon_serve.backends.ort_backend import OrtBackend
    from recon_serve.index import open_index
    from recon_serve.index.milvus_index import is_milvus
    from recon_serve.model.factory import DEFAULT_CHECKPOINT
    from recon_serve.settings import Settings

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, not {engine!r}")
    t0 = time.time()
    index_location = str(index_dir)
    index_dir = Path(state_dir or "embed-state") if is_milvus(index_location) else Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(index_dir / MANIFEST_FILE)
    try:
        if source is None:
            source, metadata_csv = manifest.get("source"), metadata_csv or manifest.get("metadata_csv")
            if source is None:
                raise ValueError(f"no SOURCE given and {index_dir} has no earlier run to take it from")
        manifest.set("source", str(Path(source).resolve()))
        if metadata_csv:
            manifest.set("metadata_csv", str(Path(metadata_csv).resolve()))
        files = discover(source, metadata_csv)
        # export once here (cached); workers open the exported graph
        ref = OrtBackend(checkpoint or DEFAULT_CHECKPOINT, cache_dir or Settings().cache_dir, threads=1)
        model_dir, version, card = str(ref.path), ref.version, ref.model_card
        ref.close()
        if not card.get("embedding_dim"):
            raise ValueError("this model has no text-aligned embedding (an official fine-tune checkpoint serves "
                             "labels only); embed the library with a model that has one")
        known = {} if reindex else manifest.known()
        done = {i: sha for i, (sha, status, v) in known.items() if status == "ok" and v == version}
        by_id = {f.id: f for f in files}
        chunks = [[(f.id, str(f.path)) for f in files[i:i + options.batch_size]]
                  for i in range(0, len(files), options.batch_size)]
        skips = [{i: done[i] for i, _ in c if i in done} for c in chunks]
        workers = max(1, workers or os.cpu_count() or 1)
        counts = {"embedded": 0, "skipped": 0, "failed": 0}
        with open_index(index_location, card, version) as index:
            last_save = t_embed = time.time()
            bar = tqdm(total=len(files), unit="file", desc=f"embed ({engine}, {workers} worker{'s' * (workers > 1)})",
                       disable=not progress, smoothing=0.1)
            for results in ENGINES[engine](chunks, skips, model_dir, options, workers):
                ok = [r for r in results if r[0] == "ok"]
                if ok:
                    shapes = np.stack([r[3][1] for r in ok]) if "shape" in index.fields else None
                    index.add_many([r[1] for r in ok], np.stack([r[3][0] for r in ok]),
                                   [by_id[r[1]].metadata for r in ok], version, shapes)
                failed = [r for r in results if r[0] == "error"]
                for r in failed:
                    index.remove(r[1])  # a file that broke since its last embedding leaves the index
                manifest.record([(r[1], r[2], "ok" if r[0] != "error" else "error",
                                  r[3] if r[0] == "error" else None, version) for r in results])
                for kind, key in (("ok", "embedded"), ("skip", "skipped"), ("error", "failed")):
                    counts[key] += sum(r[0] == kind for r in results)
                bar.update(len(results))
                if time.time() - last_save > 60:
                    index.save()  # SQLite is durable already; this keeps reopening fast
                    last_save = time.time()
            bar.close()
            embed_seconds = time.time() - t_embed
            pruned = 0
            if prune:
                gone = set(index.ids()) - set(by_id)
                for id_ in gone:
                    index.remove(id_)
                manifest.forget(gone)
                pruned = len(gone)
            index.save()
            parquet = write_parquet(index, index_dir / PARQUET_FILE)
            total = len(index)
            stale = {str(v): n for v, n in index.model_versions().items() if v != version}
        seconds = time.time() - t0
        errors = [e for e in manifest.errors() if e["id"] in by_id]
        report = {"source": str(source), "index": index_location, "engine": engine, "workers": workers,
                  "model_version": version, "files": len(files), **counts, "pruned": pruned,
                  "index_size": total, "stale_embeddings": stale, "seconds": round(seconds, 2),
                  "embed_seconds": round(embed_seconds, 2),  # workers' start-up included, the export not
                  "files_per_second": round(len(files) / embed_seconds, 2) if embed_seconds > 0 else None,
                  "parquet": parquet, "errors": errors}
        (index_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        return report
    finally:
        manifest.close()


def write_parquet(index, path: Path) -> str | None:
    """All embeddings of the index as Parquet (atomic); None when pyarrow is missing."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        log.warning("pyarrow is not installed: no %s written", path.name)
        return None
    tmp = path.with_name(f".{path.name}.tmp")
    fields = [("id", pa.string()), ("model_version", pa.string()),
              ("embedding", pa.list_(pa.float32(), index.dim)), ("metadata", pa.string())]
    shape_dim = index.fields.get("shape")
    if shape_dim:  # NaN rows: shapes stored before the index had shape vectors
        fields.append(("shape_embedding", pa.list_(pa.float32(), shape_dim)))
    schema = pa.schema(fields)
    with pq.ParquetWriter(tmp, schema) as w:
        for ids, vectors, metas, versions, shapes in index.export_rows():
            cols = {"id": ids, "model_version": versions,
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), index.dim),
                    "metadata": [json.dumps(m) for m in metas]}
            if shape_dim:
                cols["shape_embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(shapes.reshape(-1)), shape_dim)
            w.write_table(pa.table(cols, schema=schema))
    os.replace(tmp, path)
    return str(path)


__all__ = ["EmbedWorker", "JobOptions", "SourceFile", "embed_library", "write_parquet"]
