"""SQLite side of the shape index: the source of truth.

Each row holds the user's string id, its int64 faiss id, the raw float32 vectors (text, and shape
when the index has that field), JSON metadata and the model version. The vector lives here (not only in FAISS) so the FAISS index can always
be rebuilt: after a crash, on switching flat -> HNSW, or on compaction.

``faiss_id`` is an AUTOINCREMENT rowid, so an id is never reused, not even after a delete. That
makes "same id set" imply "same vectors", which is what reconciliation on open relies on.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import numpy as np

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


def encode_metadata(metadata) -> str:
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict):
        raise TypeError("metadata must be a dict (JSON object)")
    return json.dumps(metadata, separators=(",", ":"), allow_nan=False)


_SCALARS = (str, int, float, bool, type(None))


def filter_sql(filter: dict) -> tuple[str, list]:
    """WHERE clause for equality on top-level metadata keys; a list means "any of these".

    Types are compared as JSON types, so True does not match 1 and None matches only an explicit
    null (a missing key matches nothing). Runs in SQLite via json_each, so no key escaping.
    """
    clauses, params = [], []
    for key, wanted in filter.items():
        if not isinstance(key, str):
            raise TypeError(f"filter keys must be strings, got {key!r}")
        values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        alternatives, key_params = [], [key]
        for value in values:
            if not isinstance(value, _SCALARS):
                raise TypeError(f"filter values must be JSON scalars, got {value!r} for {key!r}")
            if value is None:
                alternatives.append("j.type = 'null'")
            elif isinstance(value, bool):
                alternatives.append(f"j.type = '{'true' if value else 'false'}'")
            elif isinstance(value, (int, float)):
                alternatives.append("(j.type IN ('integer', 'real') AND j.value = ?)")
                key_params.append(value)
            else:
                alternatives.append("(j.type = 'text' AND j.value = ?)")
                key_params.append(value)
        if not alternatives:  # empty list of allowed values: nothing can match
            return "0", []
        clauses.append(
            "EXISTS (SELECT 1 FROM json_each(shapes.metadata) AS j WHERE j.key = ? AND ("
            + " OR ".join(alternatives) + "))"
        )
        params.extend(key_params)
    return (" AND ".join(clauses) or "1"), params
