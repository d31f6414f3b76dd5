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
"""


def connect(path: Path) -> sqlite3.Connection:
    """WAL so readers never block on a writer; NORMAL sync is crash-safe for the process
    (a power cut may drop the last commits, never corrupt). Transactions are explicit."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    if "shape_vector" not in {r[1] for r in conn.execute("PRAGMA table_info(shapes)")}:  # an index from before shape vectors
        conn.execute("ALTER TABLE shapes ADD COLUMN shape_vector BLOB")
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
    """WHERE clause for equality on top-level metadata keys; a list means "any of these".

    Types are compared as JSON types, so True does not match 1 and None matches only an explicit
    null (a missing key matches nothing). Runs in SQLite via json_each, so no key escaping.
    """
    check_filter(filter)
    clauses, params = [], []
    for key, wanted in filter.items():
        values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        if not values:  # empty list of allowed values: nothing can match
            return "0", []
        # one IN (...) per JSON type keeps the expression shallow however many values are listed
        texts = [v for v in values if isinstance(v, str)]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        bools = sorted({v for v in values if isinstance(v, bool)})
        alternatives = (["j.type = 'null'"] if any(v is None for v in values) else []) + \
            [f"j.type = '{'true' if b else 'false'}'" for b in bools]
        if numbers:
            alternatives.append(f"(j.type IN ('integer', 'real') AND j.value IN ({','.join('?' * len(numbers))}))")
        if texts:
            alternatives.append(f"(j.type = 'text' AND j.value IN ({','.join('?' * len(texts))}))")
        clauses.append("EXISTS (SELECT 1 FROM json_each(shapes.metadata) AS j WHERE j.key = ? AND ("
                       + " OR ".join(alternatives) + "))")
        params.extend([key, *numbers, *texts])
    return (" AND ".join(clauses) or "1"), params
