"""FAISS side of the shape index: build, search, persist.

Every index is an ``IndexIDMap2`` so callers deal only in stable int64 ids and vectors stay
reconstructable. Two inner kinds, both inner product on unit vectors (= cosine):

* ``flat``: exact ``IndexFlatIP``; supports ``remove_ids``.
* ``hnsw``: ``IndexHNSWFlat``; no ``remove_ids``, so the store passes removed ids as ``exclude``.

Nothing here knows about SQLite; ``store.py`` owns which ids are live.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

# Batched flat searches take the BLAS path from 20 queries instead of 128000: ~6x faster for
# 100 queries on 100k x 384 (dependencies-checked.md section 4). Process-wide, harmless elsewhere.
faiss.cvar.distance_compute_blas_threshold = 20

FLAT, HNSW = "flat", "hnsw"
FEW_QUERIES = 20  # below this many queries a search runs on the calling thread alone (see _few_threads)


def new_index(kind: str, dim: int, hnsw_m: int = 32, ef_construction: int = 40) -> faiss.IndexIDMap2:
    """An empty id-mapped index of the given kind."""
    if kind == FLAT:
        inner = faiss.IndexFlatIP(dim)
    elif kind == HNSW:
        inner = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = ef_construction
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    return faiss.IndexIDMap2(inner)  # faiss's wrapper keeps a Python reference to inner


def kind_of(index: faiss.Index) -> str:
    inner = faiss.downcast_index(index.index)
    return HNSW if isinstance(inner, faiss.IndexHNSW) else FLAT


def ids_of(index: faiss.IndexIDMap2) -> np.ndarray:
    """External ids in storage order (position i holds vector i of the inner index)."""
    return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)


def add(index: faiss.IndexIDMap2, ids: np.ndarray, vectors: np.ndarray) -> None:
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))


def remove(index: faiss.IndexIDMap2, ids) -> None:
    """Physically remove ids from a flat index (HNSW cannot; the store tombstones instead)."""
    ids = np.asarray(list(ids), dtype=np.int64)
    if len(ids):
        index.remove_ids(ids)


def search(index, queries: np.ndarray, k: int, ef_search: int = 64, exclude=None):
    """Top-k over the whole index; ``exclude`` (ids, HNSW tombstones) never come back.

    ``exclude`` uses an IDSelector inside the search, so k live hits come back whenever the
    index holds k live vectors, rather than k minus however many tombstones ranked high.
    """
    sel = None
    if exclude is not None and len(exclude):
        sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.asarray(list(exclude), dtype=np.int64)))
    if kind_of(_cpu(index)) == HNSW:
        params = faiss.SearchParametersHNSW(efSearch=max(ef_search, k), sel=sel)
    else:
        params = faiss.SearchParameters(sel=sel) if sel is not None else None
    with _few_threads(len(queries)):
        return index.search(queries, k, params=params)


@contextmanager
def _few_threads(n_queries: int):
    """One OpenMP thread for a handful of queries: FAISS splits work by query, so more threads
    only add hand-offs, which on a loaded 2-core host made a 0.5 ms HNSW search take 16 ms.
    omp_set_num_threads sets the calling thread's own value, so other threads are unaffected."""
    if n_queries >= FEW_QUERIES:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def exact_search(index: faiss.IndexIDMap2, queries: np.ndarray, k: int, allowed: np.ndarray, chunk: int = 65_536):
    """Exact top-k restricted to ``allowed`` ids, whatever the index kind.

    Gathers the allowed vectors from the flat storage (the flat index itself, or HNSW's) by
    position a chunk at a time and scores them with one matmul each, so the cost follows the
    number of matches, not the index size. HNSW's own filtered traversal is skipped on purpose:
    with a selective filter it can miss the best match.
    """
    allowed = np.asarray(allowed, dtype=np.int64)
    ids = ids_of(index)
    positions = _positions(ids, allowed)
    stored = _stored_vectors(index)
    k = min(k, len(allowed))
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_p = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(positions), chunk):
        pos = positions[start:start + chunk]
        scores = _scores(queries, stored, pos)
        best_s = np.concatenate([best_s, scores], axis=1)
        best_p = np.concatenate([best_p, np.broadcast_to(pos, scores.shape)], axis=1)
        if best_s.shape[1] > k:
            top = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_p = np.take_along_axis(best_s, top, 1), np.take_along_axis(best_p, top, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, 1), ids[np.take_along_axis(best_p, order, 1)]


def _scores(queries: np.ndarray, stored: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Inner products [nq, len(pos)] of the queries with stored rows ``pos``.

    A few queries read the rows in place with FAISS' SIMD loop on this thread (no gathered copy:
    4x faster than gather + einsum for 20k x 384, and BLAS would thread even one query's
    matrix-vector product, whose hand-offs on a busy host cost more than the product); many
    queries gather once and take BLAS.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if len(queries) >= FEW_QUERIES:
        return queries @ stored[pos].T
    out = np.empty((len(queries), len(pos)), dtype=np.float32)
    ids = np.ascontiguousarray(np.broadcast_to(pos, out.shape), dtype=np.int64)
    faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(queries), faiss.swig_ptr(stored),
                                     faiss.swig_ptr(ids), stored.shape[1], len(queries), len(pos))
    return out


def _stored_vectors(index: faiss.IndexIDMap2) -> np.ndarray:
    """A no-copy [ntotal, d] view of the float32 vectors in storage order."""
    inner = faiss.downcast_index(index.index)
    flat = faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner
    return faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Storage positions of the ``wanted`` ids that the index holds (ids are added in increasing
    order, so the id map is normally sorted; otherwise it is sorted here)."""
    order = None if np.all(ids[1:] > ids[:-1]) else np.argsort(ids, kind="stable")
    sorted_ids = ids if order is None else ids[order]
    at = np.clip(np.searchsorted(sorted_ids, wanted), 0, max(len(ids) - 1, 0))
    held = len(ids) > 0
    found = at[sorted_ids[at] == wanted] if held else at[:0]
    return found if order is None else order[found]


def write_atomic(index: faiss.Index, path: Path) -> None:
    """Write to a temp file in the same directory, fsync, then os.replace over ``path``.

    A crash or error at any point leaves either the old file or the new one, never a mix.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        faiss.write_index(_cpu(index), str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def read(path: Path, dim: int) -> faiss.IndexIDMap2 | None:
    """The saved index, or None when it is missing, unreadable or of another shape."""
    try:
        index = faiss.read_index(str(path))
    except Exception:  # missing, truncated or garbage: the store rebuilds from its vectors
        return None
    if not isinstance(index, faiss.IndexIDMap2) or index.d != dim:
        return None
    return index


def to_gpu(index: faiss.IndexIDMap2):
    """A GPU copy of a flat index for searching, or None (no GPU, HNSW, or any failure)."""
    global _GPU_RES
    try:
        if kind_of(index) != FLAT or faiss.get_num_gpus() <= 0:
            return None
        _GPU_RES = _GPU_RES or faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(_GPU_RES, 0, index)
        gpu._cpu = index
        return gpu
    except Exception:
        return None


_GPU_RES = None


def _cpu(index):
    return getattr(index, "_cpu", index)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
