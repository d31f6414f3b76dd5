"""A small typed client for the recon-serve HTTP API (one method per endpoint), on httpx.

    from recon_client import ReconClient
    with ReconClient("http://127.0.0.1:8000", api_key="...") as c:
        c.classify("chair.obj", up_axis="y")
        c.add_shape("chair-1", "chair.obj", metadata={"category": "chair"})
        c.search_text("a wooden chair", k=5)

A shape is a file path (uploaded as multipart `file`) or an [N,3] sequence of points (sent as JSON).
Errors come back as `ReconError` with the server's `error` code, `detail` and HTTP status.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, Union
from urllib.parse import quote

import httpx

Shape = Union[str, Path, Sequence[Sequence[float]]]


class ReconError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


class ReconClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60.0):
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "ReconClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- plumbing
    def _check(self, r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                body = r.json()
                raise ReconError(r.status_code, body.get("error", "error"), body.get("detail", r.text))
            except ValueError:
                raise ReconError(r.status_code, "error", r.text) from None
        return r.json() if r.content else None

    def _post_shape(self, path: str, shape: Shape | None, **fields) -> Any:
        fields = {k: v for k, v in fields.items() if v is not None}
        if shape is None or not isinstance(shape, (str, Path)):
            body = dict(fields)
            if shape is not None:
                body["points"] = [list(map(float, p)) for p in shape]
            return self._check(self.http.post(path, json=body))
        import json

        form = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in fields.items()}
        p = Path(shape)
        with p.open("rb") as f:
            return self._check(self.http.post(path, data=form, files={"file": (p.name, f)}))

    # ---- inference
    def classify(self, shape: Shape, k: int | None = None, **options) -> dict:
        """{'labels': [{'label', 'probability'}...], 'model_version'}; options: n_points, up_axis, normalise."""
        return self._post_shape("/v1/classify", shape, k=k, **options)

    def segment(self, shape: Shape, category: str | None = None, **options) -> dict:
        return self._post_shape("/v1/segment", shape, category=category, **options)

    def zero_shot(self, shape: Shape, labels: Sequence[str], **options) -> dict:
        return self._post_shape("/v1/zero-shot", shape, labels=list(labels), **options)

    def embed(self, shape: Shape, **options) -> dict:
        return self._post_shape("/v1/embed", shape, **options)

    # ---- shape library
    def add_shape(self, id: str, shape: Shape, metadata: dict | None = None, **options) -> dict:
        return self._post_shape("/v1/shapes", shape, id=id, metadata=metadata or {}, **options)

    def get_shape(self, id: str) -> dict:
        return self._check(self.http.get(f"/v1/shapes/{quote(id, safe='')}"))

    def delete_shape(self, id: str) -> None:
        self._check(self.http.delete(f"/v1/shapes/{quote(id, safe='')}"))

    # ---- search
    def search_text(self, text: str, k: int = 10, filter: dict | None = None) -> dict:
        return self._check(self.http.post("/v1/search/text", json={"text": text, "k": k, "filter": filter}))

    def search_shape(self, shape: Shape | None = None, id: str | None = None, k: int = 10,
                     filter: dict | None = None, **options) -> dict:
        """Nearest shapes to an upload/points, or to the stored shape `id` (left out of the hits)."""
        return self._post_shape("/v1/search/shape", shape, id=id, k=k, filter=filter, **options)

    # ---- service
    def health(self) -> dict:
        return self._check(self.http.get("/healthz"))

    def ready(self) -> dict:
        """The readiness body (also when the server answers 503)."""
        r = self.http.get("/readyz")
        return r.json() if r.status_code in (200, 503) else self._check(r)

    def models(self) -> dict:
        return self._check(self.http.get("/v1/models"))

    def metrics(self) -> str:
        r = self.http.get("/metrics")
        r.raise_for_status()
        return r.text
