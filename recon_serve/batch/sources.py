"""What a batch job reads: the shape files under a folder or named in a list file, with their ids
and metadata, and the manifest that lets a job resume and skip unchanged files.

Ids are paths relative to the folder (or to the list file's folder), with forward slashes, so the
same library gives the same ids on every machine. Metadata comes from the path (format, folder,
category = first folder) and, optionally, a CSV whose `id` (or `path`) column names the file.
"""
from __future__ import annotations

import csv
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from recon_serve.geometry.decode import FORMATS


@dataclass(frozen=True)
class SourceFile:
    id: str
    path: Path
    metadata: dict


def discover(source, metadata_csv=None) -> list[SourceFile]:
    """Every readable shape file under a folder (recursive), or the files a list file names."""
    source = Path(source)
    if source.is_dir():
        root = source
        paths = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
    elif source.is_file():
        root = source.parent
        paths = []
        for line in source.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)
                paths.append(p if p.is_absolute() else root / p)
    else:
        raise FileNotFoundError(f"{source}: no such folder or list file")
    extra = _read_csv(metadata_csv) if metadata_csv else {}
    files = []
    for p in paths:
        try:
            rel = p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:  # a list file may name files anywhere
            rel = p.resolve().as_posix()
        parts = rel.split("/")
        meta = {"path": rel, "format": p.suffix.lower().lstrip("."),
                "folder": "/".join(parts[:-1]), "category": parts[0] if len(parts) > 1 else None}
        meta.update(extra.get(rel, {}))
        files.append(SourceFile(rel, p, meta))
    return files


def _read_csv(path) -> dict[str, dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not ({"id", "path"} & set(rows[0])):
        raise ValueError(f"{path}: the metadata CSV needs an 'id' or 'path' column naming each file")
    key = "id" if rows and "id" in rows[0] else "path"
    return {r[key]: {k: v for k, v in r.items() if k != key and v != ""} for r in rows}


class Manifest:
    """SQLite record of every file a job has seen: content hash, outcome, and the model version.

    Written after the index commit of the same files, so a crash between the two only means a
    file is embedded again (the index replaces by id: never twice).
    """

    def __init__(self, path):
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript("""
            CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, sha256 TEXT, status TEXT NOT NULL,
                reason TEXT, model_version TEXT, updated_at REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);""")

    def known(self) -> dict[str, tuple[str, str, str]]:
        """id -> (sha256, status, model_version)."""
        return {r[0]: (r[1], r[2], r[3]) for r in self.conn.execute("SELECT id, sha256, status, model_version FROM files")}

    def record(self, rows) -> None:
        """rows: (id, sha256, status 'ok'|'error', reason, model_version), in one transaction."""
        now = time.time()
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                                  [(*r, now) for r in rows])

    def forget(self, ids) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in ids])

    def errors(self) -> list[dict]:
        return [{"id": r[0], "reason": r[1]} for r in
                self.conn.execute("SELECT id, reason FROM files WHERE status = 'error' ORDER BY id")]

    def get(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set(self, key: str, value: str) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self.conn.close()
