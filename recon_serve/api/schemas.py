"""Response and request models (OpenAPI documents them, with examples)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

_POINTS_EXAMPLE = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


class ErrorBody(BaseModel):
    error: str = Field(examples=["unsupported_format"])
    detail: str = Field(examples=["unsupported file type '.zip'"])


class LabelScore(BaseModel):
    label: str = Field(examples=["chair"])
    probability: float = Field(examples=[0.93])


class ClassifyResponse(BaseModel):
    labels: list[LabelScore]
    model_version: str = Field(examples=["3fa2c1d09b7e"])


class SegmentResponse(BaseModel):
    points: list[list[float]] = Field(description="the sampled points, in the input's coordinates")
    labels: list[int] = Field(description="one part id per point (index into part_names)")
    part_names: list[str] = Field(examples=[["seat", "back", "leg"]])
    category: str | None = Field(description="the category whose parts were used", examples=["chair"])
    model_version: str


class ZeroShotScore(BaseModel):
    label: str = Field(examples=["a chair"])
    similarity: float = Field(description="cosine between shape and label text embeddings", examples=[0.41])
    probability: float = Field(description="softmax over the labels of similarity / T, T fitted on validation data (the model card's zero_shot_temperature)", examples=[0.88])


class ZeroShotResponse(BaseModel):
    scores: list[ZeroShotScore]
    model_version: str


class EmbedResponse(BaseModel):
    embedding: list[float] = Field(description="text embedding: unit-length, in the text teacher's space "
                                               "(text search, zero-shot)")
    dim: int = Field(examples=[384])
    shape_embedding: list[float] | None = Field(None, description="shape embedding: unit-length, pooled from the "
                                                                  "encoder's local tokens (shape-to-shape search)")
    shape_dim: int | None = Field(None, examples=[192])
    model_version: str


class ShapeRecord(BaseModel):
    id: str = Field(examples=["chair_0001"])
    metadata: dict = Field(examples=[{"category": "chair", "source": "modelnet10"}])
    model_version: str | None
    added_at: float


class Hit(BaseModel):
    id: str
    score: float = Field(description="cosine similarity")
    metadata: dict


class SearchResponse(BaseModel):
    hits: list[Hit]
    model_version: str


class TextSearchRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "a wooden chair", "k": 5, "filter": {"category": "chair"}}]})
    text: str = Field(min_length=1, max_length=1000)
    k: int = Field(10, ge=1, le=1000)
    filter: dict | None = Field(None, description="metadata key -> value or list of allowed values")

    @field_validator("text")
    @classmethod
    def _unicode(cls, v: str) -> str:
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text holds a lone surrogate (not valid Unicode)") from None
        return v


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Ready(BaseModel):
    ready: bool
    model_loaded: bool
    index_open: bool
    model_version: str | None
    index_size: int
    stale_embeddings: dict[str, int] = Field(description="shapes per model version other than the loaded one")
    detail: str | None = Field(None, description="what to do about stale embeddings, when there are any")


SHAPE_OPTIONS = {
    "n_points": {"type": "integer", "description": "points sampled (default: the model's)", "example": 1024},
    "up_axis": {"type": "string", "enum": ["z", "y"], "default": "z", "description": "the input's up axis"},
    "normalise": {"type": "boolean", "default": True, "description": "centre and scale to the unit sphere"},
}


def shape_body(extra: dict | None = None, json_required=("points",)) -> dict:
    """OpenAPI requestBody for endpoints that take a file upload or JSON points (read by hand, so
    FastAPI cannot infer it)."""
    extra = extra or {}
    json_props = {"points": {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
                             "example": _POINTS_EXAMPLE}, **SHAPE_OPTIONS, **extra}
    form_props = {"file": {"type": "string", "format": "binary", "description": ".obj .stl .ply .off .glb .gltf .3mf .pcd .npy .npz .step"},
                  **SHAPE_OPTIONS, **{k: {**v, "type": "string"} if v.get("type") in ("object", "array") else v
                                      for k, v in extra.items()}}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": form_props}},
        "application/json": {"schema": {"type": "object", "properties": json_props, "required": list(json_required)}},
    }}}


ERROR_RESPONSES = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 408, 409, 413, 415, 422)}
