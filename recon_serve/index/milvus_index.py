"""MilvusIndex: the shape index in Milvus, behind the same interface as the FAISS ShapeIndex.

For libraries that outgrow one machine the index lives in a Milvus cluster; `milvus-lite` (PyPI)
is the embedded engine with the same client API, used by the tests and for a local file:

    milvus:///path/to/shapes.db            Milvus Lite, one local file
    milvus://host:19530                    a Milvus server or cluster (milvuss:// for TLS)
    ...?collection=name&token=user:pass    collection (default recon_shapes) and credentials

One collection row per shape: `id` (primary key), `text` and optionally `shape` vectors (inner
product on unit vectors = cosine; FLAT, so exact, unless `index_type` says otherwise), `metadata`
(the codec's JSON text, returned as stored), `tag_text`, `model_version`, `added_at` and `seq`
(insertion order, as the FAISS index's ids). Filters must match exactly as the FAISS index's do,
but Milvus compares JSON loosely (true == 1, and null equals a missing key), so each top-level
scalar is written as a typed string ("s:chair", "n:1", "b:true", "z"), and those tags are kept in
one plain string, `|key=tag|...` with key and tag hex-encoded (no LIKE wildcard, no separator can
occur inside): a filter is one `like "%|key=tag|%"` per allowed value. Milvus scans a JSON path
many times slower than a plain string (bench/bench_index.py --milvus-n: README's figures).
"""
from __future__ import annotations

import json
import threading
import time
from urllib.parse import parse_qs, urlparse

import numpy as np

from . import metadata as metadata_codec
from .store import SHAPE, TEXT, Hit, Record, VectorSizeMismatch, check_ids, unit_rows

DEFAULT_COLLECTION = "recon_shapes"
_ID_CHARS = 2048  # bytes: ids are at most 512 characters of UTF-8
_PAGE = 10_000
_FIELDS = ("id", "metadata", "model_version", "added_at", "seq")
TAG_TEXT = "tag_text"
_TAG_TEXT_CHARS = 65_535  # Milvus' VARCHAR limit; the tags of 16 KiB of metadata take at most about 33,000


def is_milvus(location) -> bool:
    return str(location).startswith(("milvus://", "milvuss://"))


def _connect_args(uri: str) -> tuple[dict, str]:
    u = urlparse(uri)
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    collection = q.pop("collection", DEFAULT_COLLECTION)
    if not u.netloc:  # milvus:///path/file.db: Milvus Lite
        return {"uri": u.path}, collection
    scheme = "https" if u.scheme == "milvuss" else "http"
    args = {"uri": f"{scheme}://{u.netloc}"}
    if "token" in q:
        args["token"] = q["token"]
    if "db" in q:
        args["db_name"] = q["db"]
    return args, collection


def tag_text(meta: dict) -> str:
    """The `tag_text` of one record's (decoded) metadata: |hex(key)=hex(tag)| per scalar value."""
    entries = [f"{k.encode().hex()}={t.encode().hex()}" for k, v in meta.items() if (t := tag(v)) is not None]
    return "|" + "".join(e + "|" for e in entries)


def tag(value) -> str | None:
    """A metadata scalar as a typed string: equal tags exactly when FAISS' filter calls them equal
    (1 == 1.0; True != 1; None only for an explicit null). Lists and objects get no tag."""
    if value is None:
        return "z"
    if isinstance(value, bool):
        return "b:true" if value else "b:false"
    if isinstance(value, int):
        return f"n:{value}"
    if isinstance(value, float):
        return f"n:{int(value)}" if value.is_integer() and abs(value) < 2 ** 63 else f"n:{value!r}"
    if isinstance(value, str):
        return "s:" + value
    return None


class MilvusIndex:
    """Same public interface as ShapeIndex (add, add_many, remove, get, embedding, ids, search with
    filters, model_versions, export_rows, len, in, save, close); `kind` is "milvus"."""

    kind = "milvus"

    def __init__(self, uri: str, dim: int = 384, shape_dim: int = 0, model_version: str | None = None,
                 index_type: str = "FLAT", existing_wins: bool = False):
        """`existing_wins`: an existing collection keeps its text field's size (as ShapeIndex.for_model
        opens a directory with its saved one); a shape size other than the model's is a VectorSizeMismatch
        either way, and so is any size mismatch without it."""
        from pymilvus import MilvusClient

        args, self.collection = _connect_args(uri)
        self.uri, self._lock = uri, threading.RLock()
        self.client = MilvusClient(**args)
        self.model_version = model_version
        if self.client.has_collection(self.collection):
            have = {f["name"]: f for f in self.client.describe_collection(self.collection)["fields"]}
            held = {n: int(have[n]["params"]["dim"]) for n in (TEXT, SHAPE) if n in have}
            if existing_wins:  # as the FAISS index: the text field keeps its size, the model's shape size is checked
                dim, shape_dim = held[TEXT], shape_dim or held.get(SHAPE, 0)
            if held.get(TEXT) != dim:
                raise VectorSizeMismatch(uri, TEXT, held.get(TEXT), dim)
            if shape_dim and held.get(SHAPE, shape_dim) != shape_dim:
                raise VectorSizeMismatch(uri, SHAPE, held[SHAPE], shape_dim)
            if TAG_TEXT not in have:  # the first Milvus schema kept tags as JSON
                raise ValueError(f"{uri}: collection {self.collection!r} has no {TAG_TEXT} field (made by an "
                                 "earlier recon-serve); re-create it: embed into a new collection, then drop this one")
            self._fields = held
        else:
            self._fields = {TEXT: dim, **({SHAPE: shape_dim} if shape_dim else {})}
            self._create(index_type)
        self.client.load_collection(self.collection)
        self._seq = 0

    @classmethod
    def for_model(cls, uri: str, model_card: dict, model_version: str | None = None) -> "MilvusIndex":
        return cls(uri, dim=int(model_card.get("embedding_dim") or 384),
                   shape_dim=int(model_card.get("shape_embedding_dim") or 0), model_version=model_version,
                   existing_wins=True)

    def _create(self, index_type: str) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=_ID_CHARS)
        for name, dim in self._fields.items():
            schema.add_field(name, DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("metadata", DataType.VARCHAR, max_length=metadata_codec.MAX_BYTES * 4)
        schema.add_field(TAG_TEXT, DataType.VARCHAR, max_length=_TAG_TEXT_CHARS)
        schema.add_field("model_version", DataType.VARCHAR, max_length=256)
        schema.add_field("added_at", DataType.DOUBLE)
        schema.add_field("seq", DataType.INT64)
        params = self.client.prepare_index_params()
        for name in self._fields:
            params.add_index(name, index_type=index_type, metric_type="IP")
        self.client.create_collection(self.collection, schema=schema, index_params=params,
                                      consistency_level="Strong")

    @property
    def fields(self) -> dict[str, int]:
        return dict(self._fields)

    @property
    def dim(self) -> int:
        return self._fields[TEXT]

    # --- writes -------------------------------------------------------------------------
    def add(self, id: str, embedding, metadata: dict | None = None, model_version: str | None = None,
            shape_embedding=None) -> None:
        self.add_many([id], np.asarray(embedding)[None], [metadata], model_version,
                      None if shape_embedding is None else np.asarray(shape_embedding)[None])

    def add_many(self, ids, embeddings, metadata=None, model_version: str | None = None, shape_embeddings=None) -> None:
        """Upsert (a repeated id in the batch keeps its last entry); the same checks as ShapeIndex."""
        ids = list(ids)
        vectors = unit_rows(embeddings, len(ids), self.dim)
        if (shape_embeddings is None) != (SHAPE not in self._fields):
            raise ValueError("this index has a shape field: give shape embeddings too" if SHAPE in self._fields
                             else "this index has no shape field (open it with shape_dim set)")
        shape_vectors = None if shape_embeddings is None else unit_rows(shape_embeddings, len(ids), self._fields[SHAPE], SHAPE)
        metas = [None] * len(ids) if metadata is None else list(metadata)
        if len(metas) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(metas)} metadata entries")
        check_ids(ids)
        encoded = [metadata_codec.encode(m) for m in metas]
        version = model_version if model_version is not None else self.model_version
        now = time.time()
        keep = sorted({id_: i for i, id_ in enumerate(ids)}.values())
        with self._lock:
            rows = []
            for i in keep:
                self._seq = max(self._seq + 1, time.time_ns())  # insertion order, across restarts too
                meta = json.loads(encoded[i])
                row = {"id": ids[i], TEXT: vectors[i].tolist(), "metadata": encoded[i], TAG_TEXT: tag_text(meta),
                       "model_version": version or "", "added_at": now, "seq": self._seq}
                if shape_vectors is not None:
                    row[SHAPE] = shape_vectors[i].tolist()
                rows.append(row)
            for start in range(0, len(rows), 1000):
                self.client.upsert(self.collection, rows[start:start + 1000])

    def remove(self, id: str) -> bool:
        with self._lock:
            if id not in self:
                return False
            self.client.delete(self.collection, ids=[id])
            return True

    def compact(self) -> None:
        self.client.compact(self.collection)

    def save(self) -> None:
        self.client.flush(self.collection)

    def close(self, save: bool = True) -> None:
        with self._lock:
            if self.client is None:
                return
            if save:
                self.save()
            self.client.close()
            self.client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- reads --------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count("")

    def _count(self, filter: str) -> int:
        res = self.client.query(self.collection, filter=filter, output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def __contains__(self, id) -> bool:
        return bool(self.client.get(self.collection, ids=[id], output_fields=["id"]))

    def get(self, id: str) -> Record | None:
        rows = self.client.get(self.collection, ids=[id], output_fields=list(_FIELDS))
        return _record(rows[0]) if rows else None

    def embedding(self, id: str, field: str = TEXT) -> np.ndarray | None:
        if field not in self._fields:
            raise ValueError(f"this index has no {field!r} vectors (fields: {', '.join(self._fields)})")
        rows = self.client.get(self.collection, ids=[id], output_fields=[field])
        return np.asarray(rows[0][field], dtype=np.float32) if rows else None

    def _all(self, fields: list[str], filter: str = ""):
        """Every (matching) row's `fields`, in insertion order."""
        it = self.client.query_iterator(self.collection, batch_size=_PAGE, filter=filter, output_fields=fields + ["seq"])
        rows = []
        try:
            while page := it.next():
                rows.extend(page)
        finally:
            it.close()
        return sorted(rows, key=lambda r: r["seq"])

    def ids(self) -> list[str]:
        return [r["id"] for r in self._all(["id"])]

    def model_versions(self) -> dict[str | None, int]:
        """Shapes per model version. The current version's shapes are counted by Milvus (`/readyz` asks
        on every call, and a large collection is mostly current); only other versions' rows are read."""
        out: dict[str | None, int] = {}
        rest = ""
        if self.model_version:
            current = json.dumps(self.model_version)
            if n := self._count(f"model_version == {current}"):
                out[self.model_version] = n
            rest = f"model_version != {current}"
        if not rest or self._count(rest):
            for r in self._all(["model_version"], rest):
                v = r["model_version"] or None
                out[v] = out.get(v, 0) + 1
        return out

    def export_rows(self, batch: int = 10_000):
        names = [TEXT, *([SHAPE] if SHAPE in self._fields else []), "id", "metadata", "model_version"]
        rows = self._all(names)
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            shape = (np.asarray([r[SHAPE] for r in chunk], dtype=np.float32) if SHAPE in self._fields else None)
            yield ([r["id"] for r in chunk], np.asarray([r[TEXT] for r in chunk], dtype=np.float32),
                   [metadata_codec.decode(r["metadata"]) for r in chunk], [r["model_version"] or None for r in chunk],
                   shape)

    def search(self, query, k: int = 10, filter: dict | None = None, field: str = TEXT):
        """Nearest shapes by cosine in `field`; [dim] gives a list of hits, [n, dim] a list per row."""
        if k <= 0:
            raise ValueError("k must be positive")
        if field not in self._fields:
            raise ValueError(f"this index has no {field!r} vectors (fields: {', '.join(self._fields)})")
        queries = np.asarray(query, dtype=np.float32)
        single = queries.ndim == 1
        queries = unit_rows(queries.reshape(1, -1) if single else queries, None, self._fields[field], field)
        expr = filter_expression(filter) if filter else ""
        if expr == "false":
            hits = [[] for _ in queries]
        else:
            res = self.client.search(self.collection, queries.tolist(), limit=min(k, 16384), filter=expr,
                                     anns_field=field, output_fields=["metadata"], search_params={"metric_type": "IP"})
            hits = [[Hit(h["id"], float(h["distance"]), metadata_codec.decode(h["entity"]["metadata"])) for h in row]
                    for row in res]
        return hits[0] if single else hits


def filter_expression(filter: dict) -> str:
    """A Milvus boolean expression equal to ShapeIndex's filter: every key, any of its values."""
    metadata_codec.check_filter(filter)
    clauses = []
    for key, wanted in filter.items():
        values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        if not values:
            return "false"
        k = key.encode().hex()
        tags = sorted({tag(v).encode().hex() for v in values})
        clauses.append("(" + " or ".join(f'{TAG_TEXT} like "%|{k}={t}|%"' for t in tags) + ")")
    return " and ".join(clauses)


def _record(row) -> Record:
    return Record(row["id"], metadata_codec.decode(row["metadata"]), row["model_version"] or None, row["added_at"])
