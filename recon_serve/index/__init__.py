"""Shape library index: FAISS for search, SQLite for ids, metadata and the vectors themselves."""
from .store import Hit, Record, Settings, ShapeIndex

__all__ = ["Hit", "Record", "Settings", "ShapeIndex"]
