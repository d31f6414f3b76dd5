"""Shape library index: FAISS for search, SQLite for ids, metadata and the vectors themselves
(`ShapeIndex`, a directory), or a Milvus collection (`MilvusIndex`, a milvus:// URI)."""
from pathlib import Path

from .store import Hit, Record, Settings, ShapeIndex


def open_index(location, model_card: dict, model_version: str | None = None):
    """The index a server or batch job writes: a milvus:// URI or a directory."""
    from .milvus_index import MilvusIndex, is_milvus

    if is_milvus(location):
        return MilvusIndex.for_model(str(location), model_card, model_version)
    return ShapeIndex.for_model(Path(location), model_card, model_version)


__all__ = ["Hit", "Record", "Settings", "ShapeIndex", "open_index"]
