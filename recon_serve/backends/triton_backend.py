"""Inference on a Triton server over HTTP (model `recon_python`, as `recon-serve export` writes it).

Triton does not serve model_card.json, so the card is read from the local copy of the model
repository when `repository` is given (labels need it); otherwise only the embedding is meaningful.
"""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from recon_serve.backends.base import Backend, version_of

MODEL = "recon_python"


def _client(url: str):
    import tritonclient.http as httpclient

    parsed = urlparse(url if "://" in url else f"http://{url}")
    return httpclient.InferenceServerClient(parsed.netloc, ssl=parsed.scheme == "https")


def load_live_version(url: str, model: str = MODEL) -> None:
    """Model-control `load`: Triton re-reads config.pbtxt, whose version policy names the live version."""
    client = _client(url)
    try:
        client.load_model(model)
    finally:
        client.close()


class TritonBackend(Backend):
    name = "triton"

    def __init__(self, url: str, repository: str | Path | None = None, model: str = MODEL):
        import tritonclient.http as httpclient

        self.client = _client(url)
        self.model = model
        self._http = httpclient
        meta = self.client.get_model_metadata(model)
        self.outputs = [o["name"] for o in meta["outputs"]]
        self.model_card = {"version": meta.get("versions", ["?"])[-1]}
        if repository is not None:
            from recon_serve.backends.ort_backend import _version_dir

            self.model_card = json.loads((_version_dir(Path(repository)) / "model_card.json").read_text())
        self.version = version_of(self.model_card)
        number = self.model_card.get("version")  # ask for the card's version, not whichever Triton has newest
        self.model_version = str(number) if isinstance(number, int) else ""

    def infer(self, points: np.ndarray, parts: bool = False) -> dict[str, np.ndarray]:
        """Triton runs its one all-outputs model; without `parts` the part logits are not sent back."""
        from recon_serve.export.onnx import PARTS_ONLY

        x = np.ascontiguousarray(points, dtype=np.float32)
        inp = self._http.InferInput("points", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        names = [n for n in self.outputs if parts or n not in PARTS_ONLY]
        outs = [self._http.InferRequestedOutput(n) for n in names]
        result = self.client.infer(self.model, [inp], model_version=self.model_version, outputs=outs)
        return {n: result.as_numpy(n) for n in names}

    def close(self) -> None:
        self.client.close()
