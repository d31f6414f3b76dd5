"""The one request-validation layer: JSON parsing with a depth cap, and typed options.

Every endpoint reads its body and options through these functions, so a value of the wrong type
(a list where a number belongs, 1e999, a lone UTF-16 surrogate, JSON nested 1,000 deep) becomes
a 400 with a message here, before any work is done, instead of a 500 somewhere further down.
Metadata and filters have their own codec in the index (recon_serve/index/metadata.py), which
applies the same value rules to what it stores and what it matches.
"""
from __future__ import annotations

import json
import math

import numpy as np
import orjson
import simdjson

from recon_serve.errors import BadRequest

MAX_JSON_DEPTH = 32  # points are 2 deep, filters 2, metadata at most 8 (the codec's own cap)
MAX_LABELS = 256
MAX_LABEL_CHARS = 200
LABEL_BUDGET_CHARS = 8192  # characters over all of a request's labels: what bounds the text encoder's work
_NUMBER_CHARS = b"0123456789+-.eE \t\r\n"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def parse_json(text: bytes | str, what: str = "the body"):
    """json.loads that answers 400 for anything malformed, including nesting too deep for the parser.
    orjson first (several times faster on a point array); what it refuses (NaN and Infinity literals,
    lone surrogates, deep nesting) goes to the standard parser, and so does a body where orjson may have
    rounded an integer beyond 64 bits to a float outside the points (metadata and options keep exact
    integers). In points such an integer reads as the float it rounds to, as a coordinate should."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if value is None or check_json(value, what):
        value = _parse_strict(text, what)
        check_json(value, what)
    return value


def parse_shape_json(body: bytes) -> dict | object:
    """parse_json for a shape request's body, with `points` read straight into an [N, 3] float32
    array when it is a plain array of [x, y, z] number triples and the other keys hold no lists:
    simdjson writes the numbers into one buffer, skipping a Python float per coordinate and
    np.array (most of a JSON request's parsing). Anything else (lists beside the points, escapes,
    odd numbers, duplicate keys, any backslash) takes parse_json, so what is accepted and every error stay
    exactly parse_json's."""
    fast = _fast_points(body) if isinstance(body, bytes) and b"\\" not in body else None
    return fast if fast is not None else parse_json(body)


def _fast_points(body: bytes) -> dict | None:
    try:
        doc = simdjson.Parser().parse(body)
        if not isinstance(doc, simdjson.Object):
            return None
        keys = list(doc.keys())
        arr = doc["points"] if "points" in keys else None
        if not isinstance(arr, simdjson.Array) or len(keys) != len(set(keys)):
            return None
        rows = len(arr)
        flat = np.frombuffer(arr.as_buffer(of_type="d"), dtype=np.float64)  # every leaf a number, flattened
        rest = {k: _plain(doc[k]) for k in keys if k != "points"}
        text = orjson.dumps(rest)
    except (ValueError, TypeError, RuntimeError, KeyError):  # what simdjson refuses: parse_json says why
        return None
    if rows == 0 or flat.size != 3 * rows or b"[" in text or b"]" in text or check_json(rest, "the body"):
        return None
    if not _triples(body, rows):
        return None
    with np.errstate(over="ignore"):  # a coordinate beyond float32 becomes inf: the decoder reports it
        rest["points"] = flat.astype(np.float32).reshape(rows, 3)
    return rest


def _triples(body: bytes, rows: int) -> bool:
    """Every bracket of the (valid, escape-free) body is the point array's: with the numbers and
    whitespace taken out, it must read [[,,],[,,],...] with `rows` rows and hold every '['."""
    skeleton = body.translate(None, _NUMBER_CHARS)
    return skeleton.count(b"[") == rows + 1 and b"[" + b"[,,]," * (rows - 1) + b"[,,]]" in skeleton


def _plain(value):
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _parse_strict(text: bytes | str, what: str):
    try:
        return json.loads(text)
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"{what} is not valid JSON: {e}") from None


def check_json(value, what: str, max_depth: int = MAX_JSON_DEPTH, skip_keys=("points",)) -> bool:
    """Depth cap, and every string (keys too) encodable as UTF-8: a lone surrogate such as "\\ud800"
    parses in Python but cannot be written back out. Top-level values under `skip_keys` (point arrays,
    which their decoder checks as numbers) are not walked. True when a walked float is a whole number of
    2**63 or more in magnitude: what orjson makes of a longer integer (parse_json reads those again)."""
    huge = False
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > max_depth:
            raise BadRequest(f"{what} is nested more than {max_depth} deep")
        if isinstance(v, str):
            check_text(v, what)
        elif isinstance(v, dict):
            for k, child in v.items():
                check_text(k, what)
                if not (depth == 1 and k in skip_keys):
                    stack.append((child, depth + 1))
        elif isinstance(v, list):
            stack.extend((child, depth + 1) for child in v)
        elif isinstance(v, float) and abs(v) >= 2.0 ** 63 and v.is_integer():
            huge = True
    return huge


def check_text(text: str, what: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} holds text that is not valid Unicode (a lone surrogate such as \\ud800)") from None
    return text


def as_int(value, name: str, default: int, lo: int, hi: int) -> int:
    """An integer option from JSON (int, or a float with an integral value) or a form/query string."""
    if value is None or value == "":
        return default
    n = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        n = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit() and len(value) < 32:
        n = int(value)
    if n is None:
        raise BadRequest(f"{name} must be an integer, not {_show(value)}")
    if not lo <= n <= hi:
        raise BadRequest(f"{name} must lie in [{lo}, {hi}], not {_show(value)}")
    return n


def as_bool(value, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, int)) and str(value).strip().lower() in _TRUE | _FALSE:
        return str(value).strip().lower() in _TRUE
    raise BadRequest(f"{name} must be true or false, not {_show(value)}")


def as_choice(value, name: str, default: str, choices) -> str:
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    raise BadRequest(f"{name} must be one of {', '.join(sorted(choices))}, not {_show(value)}")


def as_text(value, name: str, max_chars: int = 512, required: bool = False) -> str | None:
    """A string option (an id, a category): a JSON string or a form field, never a list or object."""
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_chars:
        raise BadRequest(f"{name} must be a non-empty string of at most {max_chars} characters, not {_show(value)}")
    return check_text(value, name)


def as_json_object(value, name: str) -> dict | None:
    """A dict from JSON, or from a JSON string (form fields)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = parse_json(value, name)
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be a JSON object")
    return value


def as_labels(value, max_labels: int = MAX_LABELS) -> list[str]:
    """Zero-shot labels: a JSON list of strings, repeated form fields, or one form field holding a JSON list.
    `max_labels` is lower for prompt recipes with more prompts per label (the text encoder's work)."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str) and value[0].lstrip().startswith("["):
        value = parse_json(value[0], "labels")  # a form field holding a JSON list
    if (not isinstance(value, list) or len(value) == 0 or
            not all(isinstance(v, str) and v.strip() and len(v) <= MAX_LABEL_CHARS for v in value)):
        raise BadRequest(f"labels must be a non-empty list of non-empty strings (at most {MAX_LABEL_CHARS} characters each)")
    if len(value) > max_labels:
        raise BadRequest(f"at most {max_labels} labels with this model's prompts, got {len(value)}")
    total = sum(len(v) for v in value)
    if total > LABEL_BUDGET_CHARS:
        raise BadRequest(f"the labels hold {total:,} characters; a request may hold at most {LABEL_BUDGET_CHARS:,} "
                         f"(e.g. {MAX_LABELS} labels of {LABEL_BUDGET_CHARS // MAX_LABELS} characters)")
    return [check_text(v.strip(), "labels") for v in value]


def as_filter(value, name: str = "filter") -> dict | None:
    """A metadata filter, checked by the index's own codec (keys, value types, caps)."""
    from recon_serve.index.metadata import check_filter

    f = as_json_object(value, name)
    if f is not None:
        check_filter(f)
    return f


def as_metadata(value) -> dict:
    """Metadata to store, encoded once here so a record that cannot be stored fails before any work."""
    from recon_serve.index.metadata import encode

    m = as_json_object(value, "metadata") or {}
    encode(m)
    return m


def _show(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
