"""The metadata codec: what the index writes, reads and filters on, checked in one place.

A record that cannot be written back out (a lone surrogate, NaN, an integer SQLite cannot hold,
JSON nested hundreds deep) would fail every later read and every search that ranks it, so it is
refused before anything is stored. Reads go through `decode` too, so a record stored before these
rules existed is shown with its bad strings replaced instead of failing the request.
"""
from __future__ import annotations

import json
import math

from recon_serve.errors import InvalidMetadata, PayloadTooLarge

MAX_BYTES = 16 * 1024  # encoded size of one record's metadata
MAX_DEPTH = 8  # {"a": {"b": [...]}} is 3
MAX_KEYS = 256  # keys over the whole object, nested ones included
MAX_FILTER_KEYS = 32
MAX_FILTER_VALUES = 1000  # over all keys of one filter
INT64 = (-(1 << 63), (1 << 63) - 1)


def encode(metadata) -> str:
    """Compact JSON for a metadata dict (None: {}); raises InvalidMetadata / PayloadTooLarge."""
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict):
        raise InvalidMetadata("metadata must be a JSON object")
    keys = 0
    stack = [(metadata, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidMetadata(f"metadata is nested more than {MAX_DEPTH} deep")
        if isinstance(v, dict):
            keys += len(v)
            if keys > MAX_KEYS:
                raise InvalidMetadata(f"metadata has more than {MAX_KEYS} keys")
            for k, child in v.items():
                if not isinstance(k, str):
                    raise InvalidMetadata(f"metadata keys must be strings, not {k!r}")
                _check_scalar(k, "metadata key")
                stack.append((child, depth + 1))
        elif isinstance(v, (list, tuple)):
            stack.extend((child, depth + 1) for child in v)
        else:
            _check_scalar(v, "metadata value")
    text = json.dumps(metadata, separators=(",", ":"), allow_nan=False)
    if len(text) > MAX_BYTES:
        raise PayloadTooLarge(f"metadata is {len(text):,} bytes as JSON; the limit is {MAX_BYTES:,}")
    return text


def decode(text: str) -> dict:
    """The stored metadata; strings that cannot be encoded (records from before this codec) are repaired."""
    value = json.loads(text)
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return value
    except (UnicodeEncodeError, RecursionError):
        return _repair(value, 0)


def check_filter(filter: dict) -> None:
    """Raise InvalidMetadata unless `filter` maps string keys to a JSON scalar or a list of them,
    within the key and value caps (a filter is one SQL statement: its cost must be bounded)."""
    if not isinstance(filter, dict):
        raise InvalidMetadata("a filter must be a JSON object of key -> value or list of values")
    if len(filter) > MAX_FILTER_KEYS:
        raise InvalidMetadata(f"a filter may name at most {MAX_FILTER_KEYS} keys, not {len(filter)}")
    total = 0
    for key, wanted in filter.items():
        if not isinstance(key, str):
            raise InvalidMetadata(f"filter keys must be strings, got {key!r}")
        _check_scalar(key, "filter key")
        values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        total += len(values)
        if total > MAX_FILTER_VALUES:
            raise InvalidMetadata(f"a filter may list at most {MAX_FILTER_VALUES} values in all")
        for value in values:
            if isinstance(value, (dict, list, tuple)):
                raise InvalidMetadata(f"filter values must be JSON scalars, got {value!r:.60} for {key!r}")
            _check_scalar(value, "filter value")


def _check_scalar(v, what: str) -> None:
    if v is None or isinstance(v, bool):
        return
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidMetadata(f"a {what} holds a lone surrogate (not valid Unicode): {v!r:.60}") from None
    elif isinstance(v, int):
        if not INT64[0] <= v <= INT64[1]:
            raise InvalidMetadata(f"a {what} is an integer beyond 64 bits: {v:.3e}")
    elif isinstance(v, float):
        if not math.isfinite(v):
            raise InvalidMetadata(f"a {what} is {v} (JSON has no NaN or infinity)")
    else:
        raise InvalidMetadata(f"a {what} of type {type(v).__name__} cannot be stored as JSON")


def _repair(v, depth: int):
    if depth > MAX_DEPTH:
        return "(nested too deeply)"
    if isinstance(v, str):
        return v.encode("utf-8", "replace").decode("utf-8")
    if isinstance(v, dict):
        return {_repair(k, depth): _repair(c, depth + 1) for k, c in v.items()}
    if isinstance(v, list):
        return [_repair(c, depth + 1) for c in v]
    return v
