"""ONNX Runtime inference, from an exported model repository or straight from a checkpoint.

Two graphs per model, so a request pays only for what it needs: "global" (embedding, class logits,
shape embedding: classify, zero-shot, embed, search, the library) and "parts" (the all-outputs
graph, with part_logits: /v1/segment only). A model without a seg head has the global one alone.

Given a checkpoint, each graph is exported once into `cache_dir/<sha256 prefix>.<graph>/` (custom-op
FPS/kNN when the kernel library builds, else pure ONNX) and reused on every later start: "parts"
from torch, "global" pruned from it, "global-int8" quantised from that (`int8=True`). Given a
directory, it is a model repository (`recon_python/<v>/`, the live version; or `recon_onnx/<v>/`) or
one version directory, with model.onnx (all outputs) and the model_card.json the export wrote; the
global graph is derived from it at load.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from recon_serve.backends.base import Backend, card_from_checkpoint, file_sha256, version_of

GRAPHS = ("parts", "global", "global-int8")  # cache entries, each derived from the one before
# Part of the cache key: bump it when the exporter writes a different graph for the same checkpoint,
# so cached graphs from older code are exported again rather than served (2: attention as softmax(q k^T) v).
EXPORT_FORMAT = 2

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


def export_cached(checkpoint: Path, cache_dir: Path, graph: str = "global") -> Path:
    """Directory with model.onnx + model_card.json of `graph` (one of GRAPHS) for `checkpoint`,
    exported on first use only; the key is the checkpoint's sha256 prefix, EXPORT_FORMAT and the graph."""
    from recon_serve.export.onnx import export_onnx, global_graph, quantize_int8

    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {GRAPHS}, not {graph!r}")
    sha = file_sha256(checkpoint)
    key = f"{sha[:16]}-e{EXPORT_FORMAT}"
    out = cache_dir / f"{key}.{graph}"
    if (out / "model_card.json").is_file() and (out / "model.onnx").is_file():
        return out
    if graph == "parts":
        from recon_serve.model.factory import create_model
        from recon_serve.ops import custom_ops_library

        model, ckpt = create_model(checkpoint)
        mode = "custom_op" if custom_ops_library() is not None else "pure"
        card = card_from_checkpoint(ckpt or {}, model, checkpoint, sha)
        card["onnx"] = {"file": "model.onnx", "mode": mode}
        log.info("exporting %s to ONNX (%s) into %s", checkpoint, mode, out)

        def write(dst):
            export_onnx(model, dst, mode=mode)
    else:
        src = export_cached(checkpoint, cache_dir, GRAPHS[GRAPHS.index(graph) - 1])
        card = json.loads((src / "model_card.json").read_text())
        derive = quantize_int8 if graph == "global-int8" else global_graph

        def write(dst):
            derive(src / "model.onnx", dst)
    card["onnx"]["graph"] = graph
    tmp = cache_dir / f".{key}.{graph}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp / "model.onnx")
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
    """`infer(points)` runs the global graph; `infer(points, parts=True)` the parts graph."""

    name = "onnxruntime"
    runs_in_process = True

    def __init__(self, checkpoint: str | Path, cache_dir: str | Path, threads: int | None = None, int8: bool = False):
        from recon_serve.export.onnx import global_graph, ort_session, quantize_int8

        path = Path(checkpoint)
        glob = "global-int8" if int8 else "global"
        if path.is_dir():
            self.path = _version_dir(path)
            self.model_card = json.loads((self.path / "model_card.json").read_text())
            parts_file = self.path / "model.onnx"
            with tempfile.TemporaryDirectory(prefix="recon-ort-") as tmp:  # a session keeps its graph in memory
                g = parts_file
                if self.model_card.get("onnx", {}).get("graph", "parts") != "parts":
                    parts_file = None  # a cache entry of a global graph (embed workers): served as it is
                else:
                    g = global_graph(g, Path(tmp) / "global.onnx")
                    if int8:
                        g = quantize_int8(g, Path(tmp) / "global-int8.onnx")
                self.session = ort_session(g, threads=threads)
        else:
            self.path = export_cached(path, Path(cache_dir), glob)  # the global graph's directory (embed workers open it)
            self.model_card = json.loads((self.path / "model_card.json").read_text())
            self.session = ort_session(self.path / "model.onnx", threads=threads)
            parts_file = export_cached(path, Path(cache_dir), "parts") / "model.onnx"
        self.version = version_of(self.model_card)
        self.outputs = [o.name for o in self.session.get_outputs()]
        has_parts = bool((self.model_card.get("config") or {}).get("num_parts"))
        self.parts_session = ort_session(parts_file, threads=threads) if has_parts and parts_file else None
        self.parts_outputs = [o.name for o in self.parts_session.get_outputs()] if self.parts_session else []

    def infer(self, points: np.ndarray, parts: bool = False) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(points, dtype=np.float32)
        session, names = (self.parts_session, self.parts_outputs) if parts and self.parts_session else (self.session, self.outputs)
        return dict(zip(names, session.run(names, {"points": x})))
