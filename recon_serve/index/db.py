"""SQLite side of the shape index: the source of truth.

Each row holds the user's string id, its int64 faiss id, the raw float32 vectors (text, and shape
when the index has that field), JSON metadata and the model version. The vector lives here (not only in FAISS) so the FAISS index can always
be rebuilt: after a crash, on switching flat -> HNSW, or on compaction.

``faiss_id`` is an AUTOINCREMENT rowid, so an id is never reused, not even after a delete. That
makes "same id set" imply "same vectors", which is what reconciliation on open relies on.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from recon_serve.index.metadata import check_filter

SCHEMA = """
CREATE TABLE IF NOT EXISTS shapes (
    faiss_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    vector        BLOB NOT NULL,
    shape_vector  BLOB,
    metadata      TEXT NOT NULL DEFAULT '{}',
    model_version TEXT,
    added_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS shapes_model_version ON shapes(model_version);
-- faiss ids still inside an HNSW index but no longer live (HNSW has no remove_ids).
CREATE TABLE IF NOT EXISTS tombstones (faiss_id INTEGER PRIMARY KEY);
-- Top-level scalar metadata values, kept by triggers, so a filter is an index lookup instead
-- of parsing every row's JSON (1.9 s at a million shapes). `type` is json_each's JSON type.
CREATE TABLE IF NOT EXISTS tags (faiss_id INTEGER NOT NULL, key TEXT NOT NULL, type TEXT NOT NULL, value);
CREATE INDEX IF NOT EXISTS tags_lookup ON tags(key, value, type, faiss_id);  -- covering: no table reads
CREATE INDEX IF NOT EXISTS tags_shape ON tags(faiss_id);
CREATE TRIGGER IF NOT EXISTS shapes_tag AFTER INSERT ON shapes BEGIN
    INSERT INTO tags SELECT NEW.faiss_id, j.key, j.type, j.value FROM json_each(NEW.metadata) AS j
    WHERE j.type NOT IN ('array', 'object');
END;
CREATE TRIGGER IF NOT EXISTS shapes_untag AFTER DELETE ON shapes BEGIN
    DELETE FROM tags WHERE faiss_id = OLD.faiss_id;
END;
CREATE TRIGGER IF NOT EXISTS shapes_retag AFTER UPDATE OF metadata ON shapes BEGIN
    DELETE FROM tags WHERE faiss_id = OLD.faiss_id;
    INSERT INTO tags SELECT NEW.faiss_id, j.key, j.type, j.value FROM json_each(NEW.metadata) AS j
    WHERE j.type NOT IN ('array', 'object');
END;
"""
TAGS_VERSION = 1  # PRAGMA user_version once the tags of rows written before the tags table exist


def connect(path: Path) -> sqlite3.Connection:
    """WAL so readers never block on a writer; NORMAL sync is crash-safe for the process
    (a power cut may drop the last commits, never corrupt). Transactions are explicit."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    if "shape_vector" not in {r[1] for r in conn.execute("PRAGMA table_info(shapes)")}:  # an index from before shape vectors
        conn.execute("ALTER TABLE shapes ADD COLUMN shape_vector BLOB")
    # which shapes have a shape vector, without reading the rows (opening reconciles against it)
    conn.execute("CREATE INDEX IF NOT EXISTS shapes_with_shape ON shapes(faiss_id) WHERE shape_vector IS NOT NULL")
    if conn.execute("PRAGMA user_version").fetchone()[0] < TAGS_VERSION:  # an index from before tags
        with transaction(conn):
            conn.execute("DELETE FROM tags")
            conn.execute("INSERT INTO tags SELECT s.faiss_id, j.key, j.type, j.value FROM shapes AS s, "
                         "json_each(s.metadata) AS j WHERE j.type NOT IN ('array', 'object')")
            conn.execute(f"PRAGMA user_version = {TAGS_VERSION}")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection):
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def encode_vector(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def decode_vectors(blobs, dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32)


def filter_sql(filter: dict) -> tuple[str, list]:
    """A query of the faiss ids whose metadata matches: equality on top-level keys, a list meaning "any of these".

    Types are compared as JSON types, so True does not match 1 and None matches only an explicit
    null (a missing key matches nothing). Each alternative is one lookup in the tags index; keys
    intersect.
    """
    check_filter(filter)
    per_key, params = [], []
    for key, wanted in filter.items():
        values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        if not values:  # empty list of allowed values: nothing can match
            return "SELECT faiss_id FROM tags WHERE 0", []
        texts = [v for v in values if isinstance(v, str)]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        lookups = []  # (condition on value and type, its parameters)
        if any(v is None for v in values):
            lookups.append(("value IS NULL AND type = 'null'", []))
        lookups += [(f"value = {int(b)} AND type = '{'true' if b else 'false'}'", [])
                    for b in sorted({v for v in values if isinstance(v, bool)})]
        if numbers:
            lookups.append((f"value IN ({','.join('?' * len(numbers))}) AND type IN ('integer', 'real')", numbers))
        if texts:
            lookups.append((f"value IN ({','.join('?' * len(texts))}) AND type = 'text'", texts))
        union = " UNION ".join(f"SELECT faiss_id FROM tags WHERE key = ? AND {cond}" for cond, _ in lookups)
        per_key.append(f"SELECT faiss_id FROM ({union})")  # compound operators do not nest without a subquery
        for _, p in lookups:
            params += [key, *p]
    if not per_key:
        return "SELECT faiss_id FROM shapes", []
    return " INTERSECT ".join(per_key), params
