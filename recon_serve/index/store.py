"""ShapeIndex: a directory holding a FAISS index plus a SQLite database of shapes.

Layout of ``path``::

    index.json         dims and settings (``ShapeIndex.open`` reads it)
    shapes.sqlite      source of truth: string id, faiss id, vectors, metadata, model version
    index.faiss        derived search structure of the ``text`` field, written atomically by ``save()``
    index.shape.faiss  the same for the ``shape`` field, when the index has one (``shape_dim`` > 0)

Vector fields: every shape has a ``text`` vector (the text-aligned embedding: text search,
zero-shot) and, with ``shape_dim`` set, a ``shape`` vector (the shape embedding: shape-to-shape
search). Both share the faiss id, the metadata and the tombstones; each has its own FAISS index.

SQLite commits on every write; the FAISS file only on ``save()``/``close()``. If the process
dies between the two, opening reconciles the FAISS index against SQLite (adds what is missing,
drops what is gone), so an id never goes missing or comes back twice.

Search: exact ``IndexFlatIP`` up to ``exact_limit`` shapes, HNSW past it. Filtered searches are
always exact (see ``search``). One lock serialises all calls: FAISS does not allow a search
while another thread adds, and the shared SQLite connection must not interleave transactions.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import db
from . import faiss_index as fi
from . import metadata as metadata_codec

SETTINGS_FILE, DB_FILE, INDEX_FILE, LOCK_FILE = "index.json", "shapes.sqlite", "index.faiss", ".lock"
TEXT, SHAPE = "text", "shape"  # vector fields
_COLUMN = {TEXT: "vector", SHAPE: "shape_vector"}
_FILE = {TEXT: INDEX_FILE, SHAPE: "index.shape.faiss"}
_SQL_CHUNK = 900  # stay under SQLite's bound-parameter limit
# Live ids per field, each answered from an index instead of a pass over the rows and their vectors:
# every shape has a text vector (NOT NULL), and shapes_with_shape is a partial index.
_LIVE_IDS = {TEXT: "SELECT faiss_id FROM shapes", SHAPE: "SELECT faiss_id FROM shapes INDEXED BY shapes_with_shape "
             "WHERE shape_vector IS NOT NULL"}


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: dict


@dataclass(frozen=True)
class Record:
    id: str
    metadata: dict
    model_version: str | None
    added_at: float  # unix seconds of the last add/upsert


@dataclass(frozen=True)
class Settings:
    dim: int = 384  # the text field's size
    shape_dim: int = 0  # the shape field's size; 0: no shape field
    model_version: str | None = None  # used when add() is given none
    exact_limit: int = 50_000  # past this many shapes, switch from exact flat to HNSW
    # HNSW: chosen by bench/bench_index.py (bench/results/index.json). M 32 / efConstruction 40
    # reached recall@10 0.86 at 1M clustered vectors even at ef_search 256; M 16 / 128 gives 0.971 at
    # ef_search 128 (p50 1.0 ms) and 0.874 at 64. Saved per index: existing ones keep theirs
    # (ShapeIndex.open(path, ef_search=128) overrides).
    ef_search: int = 128
    hnsw_m: int = 16
    ef_construction: int = 128
    tombstone_fraction: float = 0.2  # HNSW: compact once this share of vectors is removed
    use_gpu: bool = True  # flat searches on a GPU copy when faiss sees a GPU


class VectorSizeMismatch(ValueError):
    """The index holds vectors of another size than the model makes (a model with another embedding
    was deployed): its vectors cannot be searched with this model's, nor re-embedded in place."""

    def __init__(self, where, field: str, held: int, want: int):
        super().__init__(f"{where} holds {held}-d {field} vectors, but this model makes {want}-d ones: embed the "
                         f"library into a new index (`recon-serve embed SOURCE --index NEW_DIR_OR_URI`) and serve "
                         f"that one (--reindex re-embeds in place, at the index's own sizes)")


class ShapeIndex:
    def __init__(self, path, dim: int = 384, model_version: str | None = None,
                 exact_limit: int = 50_000, **settings):
        self.path = Path(path)
        self.settings = Settings(dim=dim, model_version=model_version, exact_limit=exact_limit, **settings)
        self.path.mkdir(parents=True, exist_ok=True)
        saved = _read_settings(self.path)
        if saved is not None and saved.get("dim") != dim:
            raise VectorSizeMismatch(self.path, TEXT, saved.get("dim"), dim)
        if saved is not None and saved.get("shape_dim", 0) not in (0, self.settings.shape_dim):
            raise VectorSizeMismatch(self.path, SHAPE, saved["shape_dim"], self.settings.shape_dim)
        self._lock = threading.RLock()
        self._lockfile = _lock_dir(self.path)
        self._db = None
        try:
            _write_json_atomic(self.path / SETTINGS_FILE, asdict(self.settings))
            self._db = db.connect(self.path / DB_FILE)
            self._tombstones = {r[0] for r in self._db.execute("SELECT faiss_id FROM tombstones")}
            self._gpu = None
            self._dirty = False
            self._indexes = self._reconcile({f: fi.read(self.path / _FILE[f], d) for f, d in self.fields.items()})
        except BaseException:
            if self._db is not None:
                self._db.close()
            self._lockfile.close()
            raise

    @classmethod
    def open(cls, path, **overrides) -> "ShapeIndex":
        """Open an existing index with the settings it was created with (``overrides`` win)."""
        saved = _read_settings(Path(path))
        if saved is None:
            raise FileNotFoundError(f"no {SETTINGS_FILE} in {path}")
        known = set(Settings.__dataclass_fields__)
        return cls(path, **{**{k: v for k, v in saved.items() if k in known}, **overrides})

    @classmethod
    def for_model(cls, path, model_card: dict, model_version: str | None = None) -> "ShapeIndex":
        """Open (or create) the index at ``path`` with the vector fields a model's card names."""
        shape_dim = int(model_card.get("shape_embedding_dim") or 0)
        if (Path(path) / SETTINGS_FILE).is_file():
            return cls.open(path, model_version=model_version, **({"shape_dim": shape_dim} if shape_dim else {}))
        return cls(path, dim=int(model_card.get("embedding_dim") or 384), shape_dim=shape_dim, model_version=model_version)

    @property
    def dim(self) -> int:
        return self.settings.dim

    @property
    def fields(self) -> dict[str, int]:
        """Vector field -> size: always ``text``, and ``shape`` when the index has one."""
        return {TEXT: self.settings.dim, **({SHAPE: self.settings.shape_dim} if self.settings.shape_dim else {})}

    @property
    def _index(self):
        return self._indexes[TEXT]

    @property
    def kind(self) -> str:
        """``"flat"`` (exact) or ``"hnsw"`` (approximate unfiltered search); the same for every field."""
        return fi.kind_of(self._index)

    # --- writes -------------------------------------------------------------------------

    def add(self, id: str, embedding, metadata: dict | None = None, model_version: str | None = None,
            shape_embedding=None) -> None:
        """Insert or replace (vectors, metadata and model version) the shape ``id``."""
        self.add_many([id], np.asarray(embedding)[None], [metadata], model_version,
                      None if shape_embedding is None else np.asarray(shape_embedding)[None])

    def add_many(self, ids, embeddings, metadata=None, model_version: str | None = None, shape_embeddings=None) -> None:
        """Batched ``add`` in one transaction; a repeated id in the batch keeps its last entry.
        An index with a shape field needs ``shape_embeddings`` too; one without refuses them."""
        ids = list(ids)
        vectors = self._prepare(embeddings, len(ids))
        if (shape_embeddings is None) != (SHAPE not in self.fields):
            raise ValueError("this index has a shape field: give shape embeddings too" if SHAPE in self.fields
                             else "this index has no shape field (open it with shape_dim set)")
        shape_vectors = None if shape_embeddings is None else self._prepare(shape_embeddings, len(ids), SHAPE)
        metas = [None] * len(ids) if metadata is None else list(metadata)
        if len(metas) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(metas)} metadata entries")
        check_ids(ids)
        encoded = [metadata_codec.encode(m) for m in metas]
        version = model_version if model_version is not None else self.settings.model_version
        keep = sorted({id_: i for i, id_ in enumerate(ids)}.values())
        now = time.time()
        with self._lock:
            old, new = [], []
            with db.transaction(self._db) as c:
                for i in keep:
                    row = c.execute("DELETE FROM shapes WHERE id = ? RETURNING faiss_id", (ids[i],)).fetchone()
                    if row:
                        old.append(row[0])
                    shape_blob = None if shape_vectors is None else db.encode_vector(shape_vectors[i])
                    cur = c.execute(
                        "INSERT INTO shapes (id, vector, shape_vector, metadata, model_version, added_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (ids[i], db.encode_vector(vectors[i]), shape_blob, encoded[i], version, now),
                    )
                    new.append(cur.lastrowid)
                self._tombstone(c, old)
            self._drop(old)
            fi.add(self._indexes[TEXT], np.array(new, dtype=np.int64), vectors[keep])
            if shape_vectors is not None:
                fi.add(self._indexes[SHAPE], np.array(new, dtype=np.int64), shape_vectors[keep])
            self._changed()
            if self.kind == fi.FLAT and len(self) > self.settings.exact_limit:
                self._rebuild(fi.HNSW)

    def remove(self, id: str) -> bool:
        """Delete ``id``; False when it was not there."""
        with self._lock:
            with db.transaction(self._db) as c:
                row = c.execute("DELETE FROM shapes WHERE id = ? RETURNING faiss_id", (id,)).fetchone()
                if row is None:
                    return False
                self._tombstone(c, [row[0]])
            self._drop([row[0]])
            self._changed()
            return True

    def compact(self) -> None:
        """Rebuild from stored vectors: drops HNSW tombstones, picks flat/HNSW by size."""
        with self._lock:
            self._rebuild(fi.FLAT if len(self) <= self.settings.exact_limit else fi.HNSW)

    def save(self) -> None:
        """Write the FAISS index atomically (temp file + os.replace). SQLite is already durable."""
        with self._lock:
            for f, index in self._indexes.items():
                fi.write_atomic(index, self.path / _FILE[f])
            self._dirty = False

    def close(self, save: bool = True) -> None:
        with self._lock:
            if self._db is None:
                return
            if save and self._dirty:
                self.save()
            self._db.close()
            self._db = None
            self._lockfile.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- reads --------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._index.ntotal - len(self._tombstones)

    def __contains__(self, id) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM shapes WHERE id = ?", (id,)).fetchone() is not None

    def get(self, id: str) -> Record | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, metadata, model_version, added_at FROM shapes WHERE id = ?", (id,)
            ).fetchone()
        return None if row is None else Record(row[0], metadata_codec.decode(row[1]), row[2], row[3])

    def embedding(self, id: str, field: str = TEXT) -> np.ndarray | None:
        """The stored (unit-normalised) vector of ``id`` in ``field``, or None."""
        dim = self._field_dim(field)
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMN[field]} FROM shapes WHERE id = ?", (id,)).fetchone()
        return None if row is None or row[0] is None else db.decode_vectors([row[0]], dim)[0]

    def ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM shapes ORDER BY faiss_id")]

    def model_versions(self) -> dict[str | None, int]:
        """Shape count per model version, to spot embeddings made by an older model."""
        with self._lock:
            rows = self._db.execute("SELECT model_version, count(*) FROM shapes GROUP BY model_version")
            return {version: n for version, n in rows}

    def export_rows(self, batch: int = 10_000):
        """Yield (ids, text vectors [n,dim], metadata dicts, model versions, shape vectors [n,shape_dim]
        or None without a shape field) in chunks, in insertion order."""
        last = -1
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT faiss_id, id, vector, metadata, model_version, shape_vector FROM shapes WHERE faiss_id > ? "
                    "ORDER BY faiss_id LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            shape = None
            if SHAPE in self.fields:
                sd = self.settings.shape_dim
                shape = np.stack([db.decode_vectors([r[5]], sd)[0] if r[5] is not None else np.full(sd, np.nan, np.float32)
                                  for r in rows])
            yield ([r[1] for r in rows], db.decode_vectors([r[2] for r in rows], self.dim),
                   [metadata_codec.decode(r[3]) for r in rows], [r[4] for r in rows], shape)

    def search(self, query, k: int = 10, filter: dict | None = None, field: str = TEXT):
        """Nearest shapes by cosine in ``field``. ``query`` [dim] gives a list of hits, [n, dim] a list per row.

        ``filter`` maps top-level metadata keys to a value or a list of allowed values. Filtered
        searches are exact: SQLite's tags index selects the matching faiss ids, and only those
        vectors are scored (in HNSW mode too), so the cost follows the number of matches.
        Over-fetching from an approximate index could miss the best match when few shapes pass.
        """
        if k <= 0:
            raise ValueError("k must be positive")
        queries = np.asarray(query, dtype=np.float32)
        single = queries.ndim == 1
        queries = self._prepare(queries.reshape(1, -1) if single else queries, None, field)
        with self._lock:
            index = self._indexes[field]
            if filter:
                query_ids, params = db.filter_sql(filter)
                if field != TEXT:  # shapes added before the index had this field have no vector in it
                    query_ids = (f"SELECT faiss_id FROM shapes WHERE faiss_id IN ({query_ids}) "
                                 f"AND {_COLUMN[field]} IS NOT NULL")
                allowed = np.array([r[0] for r in self._db.execute(query_ids, params)], dtype=np.int64)
                scores, labels = (fi.exact_search(index, queries, min(k, len(allowed)), allowed)
                                  if len(allowed) else _no_hits(len(queries)))
            elif len(self):
                scores, labels = self._search_all(field, queries, min(k, len(self)))
            else:
                scores, labels = _no_hits(len(queries))
            rows = self._rows_by_faiss_id(np.unique(labels[labels >= 0]).tolist())
        hits = [
            [Hit(rows[l][0], float(s), metadata_codec.decode(rows[l][1])) for s, l in zip(srow, lrow) if l in rows]
            for srow, lrow in zip(scores, labels.tolist())
        ]
        return hits[0] if single else hits

    # --- internals ----------------------------------------------------------------------

    def _field_dim(self, field: str) -> int:
        if field not in self.fields:
            raise ValueError(f"this index has no {field!r} vectors (fields: {', '.join(self.fields)})")
        return self.fields[field]

    def _prepare(self, vectors, n: int | None, field: str = TEXT) -> np.ndarray:
        return unit_rows(vectors, n, self._field_dim(field), field)

    def _tombstone(self, conn, faiss_ids) -> None:
        """HNSW cannot remove: record the ids, inside the transaction that deletes their rows."""
        if faiss_ids and self.kind == fi.HNSW:
            conn.executemany("INSERT OR IGNORE INTO tombstones VALUES (?)", [(i,) for i in faiss_ids])

    def _drop(self, faiss_ids) -> None:
        """After the commit: remove from a flat index, or exclude from HNSW searches."""
        if not faiss_ids:
            return
        if self.kind == fi.FLAT:
            for index in self._indexes.values():
                fi.remove(index, faiss_ids)
        else:
            self._tombstones.update(faiss_ids)

    def _changed(self) -> None:
        self._dirty, self._gpu = True, None
        if self._tombstones and len(self._tombstones) > self.settings.tombstone_fraction * self._index.ntotal:
            self.compact()

    def _search_all(self, field: str, queries: np.ndarray, k: int):
        if self.kind == fi.FLAT and self.settings.use_gpu:
            if self._gpu is None:
                self._gpu = {f: fi.to_gpu(ix) for f, ix in self._indexes.items()}
            if self._gpu.get(field):
                try:
                    return fi.search(self._gpu[field], queries, k)
                except Exception:  # e.g. k beyond the GPU limit: the CPU copy answers
                    pass
        return fi.search(self._indexes[field], queries, k, self.settings.ef_search, exclude=self._tombstones)

    def _rows_by_faiss_id(self, faiss_ids: list[int]) -> dict[int, tuple[str, str]]:
        rows = {}
        for start in range(0, len(faiss_ids), _SQL_CHUNK):
            chunk = faiss_ids[start:start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for fid, id_, meta in self._db.execute(
                f"SELECT faiss_id, id, metadata FROM shapes WHERE faiss_id IN ({marks})", chunk
            ):
                rows[fid] = (id_, meta)
        return rows

    def _live_vectors(self, field: str = TEXT, where: str = "1", params=(), batch: int = 10_000):
        """Yield (faiss ids, vectors) chunks of live shapes that have a ``field`` vector, from SQLite."""
        col = _COLUMN[field]
        cur = self._db.execute(f"SELECT faiss_id, {col} FROM shapes WHERE {col} IS NOT NULL AND ({where}) "
                               "ORDER BY faiss_id", params)
        while rows := cur.fetchmany(batch):
            yield (np.array([r[0] for r in rows], dtype=np.int64),
                   db.decode_vectors([r[1] for r in rows], self.fields[field]))

    def _rebuild(self, kind: str) -> None:
        s = self.settings
        indexes = {}
        for f, dim in self.fields.items():
            indexes[f] = fi.new_index(kind, dim, s.hnsw_m, s.ef_construction)
            for ids, vectors in self._live_vectors(f):
                fi.add(indexes[f], ids, vectors)
        with db.transaction(self._db) as c:
            c.execute("DELETE FROM tombstones")
        self._indexes, self._tombstones = indexes, set()
        self._dirty, self._gpu = True, None

    def _reconcile(self, indexes: dict):
        """Make each loaded FAISS index hold exactly its field's live ids (+ HNSW tombstones).

        The saved files can lag SQLite (crash after a commit, before ``save``) or be missing or
        unreadable (crash on first save). Faiss ids are never reused, so equal id sets mean
        equal contents; otherwise the difference is patched from the stored vectors. Shapes
        without a vector in a field (added before the index had it) are simply absent there.
        """
        kinds = {fi.kind_of(ix) for ix in indexes.values() if ix is not None}
        have = {f: np.sort(fi.ids_of(ix)) for f, ix in indexes.items() if ix is not None}
        if len(have) < len(indexes) or len(kinds) > 1 or any(np.any(h[1:] == h[:-1]) for h in have.values()):
            live = self._db.execute("SELECT count(*) FROM shapes").fetchone()[0]
            self._indexes = {}
            self._rebuild(fi.FLAT if live <= self.settings.exact_limit else fi.HNSW)  # unreadable, mixed or an id held twice
            self.save()
            return self._indexes
        self._indexes = indexes
        flat = self.kind == fi.FLAT
        changed, still_held = False, set()
        for f, ix in indexes.items():
            # numpy set algebra: a million ids as Python sets made opening take seconds
            live = np.sort(np.fromiter((r[0] for r in self._db.execute(_LIVE_IDS[f])), dtype=np.int64))
            held = have[f]
            missing = np.setdiff1d(live, held, assume_unique=True).tolist()
            gone = set(np.setdiff1d(held, live, assume_unique=True).tolist())
            forget = gone if flat else gone - self._tombstones  # HNSW: tombstone what is not yet
            if forget and flat:
                fi.remove(ix, sorted(forget))
            elif forget:
                with db.transaction(self._db) as c:
                    c.executemany("INSERT OR IGNORE INTO tombstones VALUES (?)", [(i,) for i in sorted(forget)])
                self._tombstones |= forget
            if not flat and self._tombstones:
                tombs = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
                still_held |= set(tombs[np.isin(tombs, held)].tolist())
            for start in range(0, len(missing), _SQL_CHUNK):
                chunk = missing[start:start + _SQL_CHUNK]
                for ids, vectors in self._live_vectors(f, f"faiss_id IN ({','.join('?' * len(chunk))})", chunk):
                    fi.add(ix, ids, vectors)
            changed |= bool(missing or forget)
        stale = self._tombstones - still_held  # flat removes for real; HNSW keeps those still in a file
        if stale:
            with db.transaction(self._db) as c:
                c.executemany("DELETE FROM tombstones WHERE faiss_id = ?", [(i,) for i in sorted(stale)])
            self._tombstones -= stale
        if not (changed or stale):
            return indexes
        self._changed()
        if self.kind == fi.FLAT and len(self) > self.settings.exact_limit:
            self._rebuild(fi.HNSW)
        self.save()
        return self._indexes


def unit_rows(vectors, n: int | None, dim: int, field: str = TEXT) -> np.ndarray:
    """Check shape and finiteness, then L2-normalise so inner product is cosine (every backend)."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != dim or (n is not None and v.shape[0] != n):
        raise ValueError(f"expected {n if n is not None else 'n'} x {dim} {field} vectors, got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if not np.all(np.isfinite(v)) or np.any(norms == 0):
        raise ValueError("vectors must be finite and non-zero")
    return np.ascontiguousarray(v / norms)


def check_ids(ids) -> None:
    for id_ in ids:
        if not isinstance(id_, str) or not id_:
            raise ValueError(f"ids must be non-empty strings, got {id_!r}")


def _no_hits(n: int):
    return np.zeros((n, 0), dtype=np.float32), np.zeros((n, 0), dtype=np.int64)


def _read_settings(path: Path) -> dict | None:
    try:
        return json.loads((path / SETTINGS_FILE).read_text())
    except FileNotFoundError:
        return None


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _lock_dir(path: Path):
    """One ShapeIndex per directory: a second writer would save a FAISS file missing the
    first one's vectors. flock is released by the OS when the process dies."""
    f = open(path / LOCK_FILE, "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RuntimeError(f"{path} is already open in another ShapeIndex") from None
    return f
