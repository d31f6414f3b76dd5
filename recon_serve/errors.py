"""Errors a user can fix, each with one stable code and one HTTP status.

The server maps any `ShapeError` to `status` and the JSON body `to_dict()`,
{"error": code, "detail": message}; anything else is an internal fault (500, logged).
"""
from __future__ import annotations


class ShapeError(Exception):
    """Base of the user-fixable failures; `detail` is the message shown to the user."""

    code = "shape_error"
    status = 422

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}


class UnsupportedFormat(ShapeError):
    """Extension not accepted, an archive, or a format whose optional reader is not installed."""
    code, status = "unsupported_format", 415


class EmptyShape(ShapeError):
    """The file parsed but holds no vertices (or no surface to sample)."""
    code, status = "empty_shape", 422


class BrokenFile(ShapeError):
    """The file is malformed: cannot be parsed, face indices out of range, truncated data."""
    code, status = "broken_file", 422


class NonFiniteCoordinates(ShapeError):
    """Some coordinate is NaN or infinite (or overflows float32)."""
    code, status = "non_finite_coordinates", 422


class TooManyPoints(ShapeError):
    """More points (or mesh vertices) than the limit."""
    code, status = "too_many_points", 413


class TooManyFaces(ShapeError):
    """More mesh faces than the limit."""
    code, status = "too_many_faces", 413


class PayloadTooLarge(ShapeError):
    """The upload, its unpacked contents, or the memory needed to decode it, is over the limit."""
    code, status = "payload_too_large", 413


class DecodeTimeout(ShapeError):
    """Decoding the file took longer than the limit (the worker is killed and replaced)."""
    code, status = "decode_timeout", 422


class InvalidPoints(ShapeError):
    """A point array of the wrong shape or type, e.g. JSON that is not [[x, y, z], ...]."""
    code, status = "invalid_points", 422


class BadRequest(ShapeError):
    """A request parameter is missing or invalid."""
    code, status = "bad_request", 400


class InvalidMetadata(BadRequest, ValueError):
    """Metadata or a filter the index cannot store or match (see recon_serve/index/metadata.py)."""
    code, status = "invalid_metadata", 400


class UnknownLabelSet(ShapeError):
    """The request names a label set (class or part names) the server does not have."""
    code, status = "unknown_label_set", 400


class NotFound(ShapeError):
    """The request names a shape id the index does not hold."""
    code, status = "not_found", 404


class Unauthorized(ShapeError):
    """A write endpoint was called without a valid X-API-Key header while keys are configured."""
    code, status = "unauthorized", 401


class ForbiddenOrigin(ShapeError):
    """A browser page from an origin the server does not allow (RECON_CORS_ORIGINS) sent a write."""
    code, status = "forbidden_origin", 403


class RequestTimeout(ShapeError):
    """The request body did not arrive within the server's body timeout."""
    code, status = "request_timeout", 408


class EmbeddingUnavailable(ShapeError):
    """The model has no text-aligned embedding (labels only), so this endpoint cannot answer."""
    code, status = "embedding_unavailable", 409


class ReloadFailed(ShapeError):
    """A model reload was refused (it did not load, or failed its check); the old model still serves."""
    code, status = "reload_failed", 409


ERRORS: tuple[type[ShapeError], ...] = (
    UnsupportedFormat, EmptyShape, BrokenFile, NonFiniteCoordinates, TooManyPoints, TooManyFaces,
    PayloadTooLarge, DecodeTimeout, InvalidPoints, BadRequest, InvalidMetadata, UnknownLabelSet, NotFound, Unauthorized,
    ForbiddenOrigin, RequestTimeout, ReloadFailed,
)
BY_CODE: dict[str, type[ShapeError]] = {cls.code: cls for cls in ERRORS}
assert len(BY_CODE) == len(ERRORS), "error codes must be unique"


def from_code(code: str, detail: str) -> ShapeError:
    """Rebuild an error from its code (e.g. one a worker process sent back)."""
    return BY_CODE.get(code, BrokenFile)(detail)
