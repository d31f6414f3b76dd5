"""Export ReCon to ONNX (dynamo exporter) and open it in ONNX Runtime.

Two graph flavours, same inputs/outputs:
  * "pure": FPS as one ONNX Scan, kNN as TopK; runs in any ONNX Runtime.
  * "custom_op": FPS/kNN as `recon_serve::FarthestPointSample` / `recon_serve::KNN` nodes, which need
    the C++ kernel library (`recon_serve.ops.custom_ops_library()`); faster, and the only form a
    Triton/TensorRT plugin can take over.
Input `points` [B,N,3] float32 with B and N dynamic; outputs `embedding` [B,D], then `logits` [B,K]
when the model has a classification head (and `part_logits` [B,N,P] with a segmentation head), then
`shape_embedding` [B,E] (for shape-to-shape search).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from recon_serve.geometry.group import grouping_indices, grouping_mode
from recon_serve.ops import DOMAIN

MODES = {"pure": "scan", "custom_op": "custom_op"}  # export mode -> grouping mode
INPUT = "points"


# ONNX output order; a model exports those it returns
OUTPUTS = ("embedding", "logits", "part_logits", "shape_embedding")


class _Outputs(nn.Module):
    """The model with a tuple in fixed order, since ONNX outputs are positional."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, points):
        out = self.model(points)
        return tuple(out[n] for n in self.names)


def export_onnx(model: nn.Module, path: str | Path, mode: str = "custom_op", opset: int = 20,
                max_batch: int = 1024, max_points: int = 65536, optimize: bool = False) -> Path:
    """Write `model` (eval mode) to `path` as ONNX; returns the path.

    `optimize` stays off: onnxscript 0.7.2's optimizer rewrites `x + c` to `x` for any |c| <= 1e-8
    (its no-op rule matches constants with abs_tol=1e-8), which drops the seg head's `d + 1e-8`
    and gives NaN; ONNX Runtime's own graph optimizations do the useful folding at load time anyway.
    """
    cfg = model.cfg
    example = torch.rand(2, cfg.num_points, 3, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            names = [n for n in OUTPUTS if n in model(example)]
        _to_onnx(_Outputs(model, names).eval(), example, path, mode, names, opset,
                 max_batch, max(cfg.num_group, cfg.group_size), max_points, optimize)
    finally:
        model.train(was_training)
    return Path(path)


class _GroupingIndices(nn.Module):
    def __init__(self, num_group: int, group_size: int, skip_origin: bool):
        super().__init__()
        self.num_group, self.group_size, self.skip_origin = num_group, group_size, skip_origin

    def forward(self, points):
        return grouping_indices(points, self.num_group, self.group_size, self.skip_origin)


def export_grouping_onnx(num_group: int, group_size: int, path: str | Path, mode: str = "custom_op",
                         opset: int = 20, skip_origin: bool = False) -> Path:
    """FPS + kNN alone (outputs `centre_idx` [B,G], `patch_idx` [B,G,S]), exported exactly as inside the model,
    so the indices each ONNX path computes can be compared with the torch reference."""
    example = torch.rand(2, max(4 * num_group, group_size), 3, generator=torch.Generator().manual_seed(0))
    _to_onnx(_GroupingIndices(num_group, group_size, skip_origin).eval(), example, path, mode, ["centre_idx", "patch_idx"], opset,
             1024, max(num_group, group_size), 65536, False)
    return Path(path)


def _to_onnx(module: nn.Module, example, path, mode, output_names, opset, max_batch, min_points, max_points, optimize):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, not {mode!r}")
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    npts = torch.export.Dim("num_points", min=min_points, max=max_points)
    table = None
    if mode == "custom_op":
        from recon_serve.ops.onnx_ops import translation_table

        table = translation_table()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with grouping_mode(MODES[mode]), torch.no_grad():
        torch.onnx.export(
            module, (example,), str(path), dynamo=True, opset_version=opset,
            input_names=[INPUT], output_names=list(output_names),
            dynamic_shapes={"points": {0: batch, 1: npts}},
            custom_translation_table=table, external_data=False, optimize=optimize, verbose=False,
        )


def needs_custom_ops(path: str | Path) -> bool:
    """True when the model imports the recon_serve custom-op domain."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return any(o.domain == DOMAIN for o in proto.opset_import)


def ort_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session, with the custom-op library registered when the model needs it."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if needs_custom_ops(path):
        from recon_serve.ops import custom_ops_library

        lib = custom_ops_library()
        if lib is None:
            raise RuntimeError(
                f"{path} uses recon_serve custom ops, but their kernel library could not be built "
                "(see the logged reason); export with mode='pure' instead"
            )
        so.register_custom_ops_library(str(lib))
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
