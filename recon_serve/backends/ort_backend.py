"""ONNX Runtime inference, from an exported model repository or straight from a checkpoint.

Given a checkpoint, the graph is exported once into `cache_dir/<sha256 prefix>/` (custom-op FPS/kNN
when the kernel library builds, else pure ONNX) and reused on every later start. Given a directory,
it is a model repository (`recon_python/<v>/`, the live version; or `recon_onnx/<v>/`) or one version
directory, with model.onnx and the model_card.json the export wrote.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from recon_serve.backends.base import Backend, card_from_checkpoint, file_sha256, version_of

log = logging.getLogger(__name__)


def _version_dir(path: Path) -> Path:
    """The version directory holding model.onnx + model_card.json inside a repository path."""
    from recon_serve.export.triton_repo import ONNX_MODEL, PYTHON_MODEL, latest_version
    from recon_serve.export.versions import version_dir

    if (path / "model.onnx").is_file():
        return path
    if (path / PYTHON_MODEL).is_dir():
        return version_dir(path)  # the live version (see export/versions.py)
    if (path / ONNX_MODEL).is_dir():
        return latest_version(path / ONNX_MODEL)
    if any(p.name.isdigit() for p in path.iterdir() if p.is_dir()):
        return latest_version(path)
    raise FileNotFoundError(f"{path}: no model.onnx, and not a model repository")


def export_cached(checkpoint: Path, cache_dir: Path) -> Path:
    """Directory with model.onnx + model_card.json for `checkpoint`, exported on first use only."""
    from recon_serve.export.onnx import export_onnx
    from recon_serve.model.factory import create_model
    from recon_serve.ops import custom_ops_library

    sha = file_sha256(checkpoint)
    out = cache_dir / sha[:16]
    if (out / "model_card.json").is_file() and (out / "model.onnx").is_file():
        return out
    model, ckpt = create_model(checkpoint)
    mode = "custom_op" if custom_ops_library() is not None else "pure"
    log.info("exporting %s to ONNX (%s) into %s", checkpoint, mode, out)
    tmp = cache_dir / f".{sha[:16]}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        export_onnx(model, tmp / "model.onnx", mode=mode)
        card = card_from_checkpoint(ckpt or {}, model, checkpoint, sha)
        card["onnx"] = {"file": "model.onnx", "mode": mode}
        (tmp / "model_card.json").write_text(json.dumps(card, indent=2))
        try:
            os.replace(tmp, out)
        except OSError:  # another process won the race: use its copy
            if not (out / "model.onnx").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self, checkpoint: str | Path, cache_dir: str | Path, threads: int | None = None):
        from recon_serve.export.onnx import ort_session

        path = Path(checkpoint)
        vdir = _version_dir(path) if path.is_dir() else export_cached(path, Path(cache_dir))
        self.model_card = json.loads((vdir / "model_card.json").read_text())
        self.version = version_of(self.model_card)
        self.session = ort_session(vdir / "model.onnx", threads=threads)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.path = vdir

    def infer(self, points: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(points, dtype=np.float32)
        return dict(zip(self.outputs, self.session.run(self.outputs, {"points": x})))
