"""Export ReCon to ONNX (dynamo exporter) and open it in ONNX Runtime.

Two graph flavours, same inputs/outputs:
  * "pure": FPS as one ONNX Scan, kNN as TopK; runs in any ONNX Runtime.
  * "custom_op": FPS/kNN as `recon_serve::FarthestPointSample` / `recon_serve::KNN` nodes, which need
    the C++ kernel library (`recon_serve.ops.custom_ops_library()`); faster, and the only form a
    Triton/TensorRT plugin can take over.
Input `points` [B,N,3] float32 with B and N dynamic; outputs `embedding` [B,D], then `logits` [B,K]
when the model has a classification head (and `part_logits` [B,N,P] with a segmentation head), then
`shape_embedding` [B,E] (for shape-to-shape search).

That all-outputs graph is what /v1/segment and a Triton repository run; `global_graph` prunes it to
the outputs every other endpoint needs (no part head), and `quantize_int8` makes the optional int8
copy of that (dynamic quantisation of MatMul/Gemm weights).
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from recon_serve.geometry.group import grouping_indices, grouping_mode
from recon_serve.ops import DOMAIN

MODES = {"pure": "scan", "custom_op": "custom_op"}  # export mode -> grouping mode
INPUT = "points"


# ONNX output order; a model exports those it returns
OUTPUTS = ("embedding", "logits", "part_logits", "shape_embedding")
PARTS_ONLY = ("part_logits",)  # outputs only the parts graph has (global_graph drops them)


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
                max_batch: int = 1024, max_points: int = 65536, optimize: bool = False,
                fold_bn: bool = True) -> Path:
    """Write `model` (eval mode) to `path` as ONNX; returns the path.

    `fold_bn` exports a copy with each Linear -> BatchNorm pair folded into one Linear
    (`fold_batchnorm`): ONNX Runtime fuses Conv+BN but leaves Gemm/MatMul -> BatchNormalization
    (the class head, the seg head's MLPs) as separate passes.

    `optimize` stays off: onnxscript 0.7.2's optimizer rewrites `x + c` to `x` for any |c| <= 1e-8
    (its no-op rule matches constants with abs_tol=1e-8), which drops the seg head's `d + 1e-8`
    and gives NaN; ONNX Runtime's own graph optimizations do the useful folding at load time anyway.
    """
    cfg = model.cfg
    example = torch.rand(2, cfg.num_points, 3, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    try:
        net = fold_batchnorm(model) if fold_bn else model
        with torch.no_grad():
            names = [n for n in OUTPUTS if n in net(example)]
        _to_onnx(_Outputs(net, names).eval(), example, path, mode, names, opset,
                 max_batch, max(cfg.num_group, cfg.group_size), max_points, optimize)
    finally:
        model.train(was_training)
    return Path(path)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval copy of `model` in which every BatchNorm1d right after a Linear in an nn.Sequential is
    folded into that Linear (and becomes Identity). The mini-PointNet is left as it is: its forward
    already folds its BatchNorms in eval mode (recon_serve.model.recon._fold)."""
    from torch.nn.utils.fusion import fuse_linear_bn_eval

    from recon_serve.model.recon import MiniPointNet

    model = copy.deepcopy(model).eval()
    skip = {id(m) for net in model.modules() if isinstance(net, MiniPointNet) for m in net.modules()}
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential) or id(seq) in skip:
            continue
        for i in range(len(seq) - 1):
            lin, bn = seq[i], seq[i + 1]
            if isinstance(lin, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and bn.track_running_stats:
                seq[i], seq[i + 1] = fuse_linear_bn_eval(lin, bn), nn.Identity()
    return model


def global_graph(src: str | Path, dst: str | Path) -> Path:
    """Write the graph at `src` without its parts-only outputs (and every node only they need: the
    part head, the encoder's extra LayerNorms for it) to `dst`. The nodes kept are the same nodes,
    so the outputs are the same numbers."""
    import onnx
    from onnx.utils import Extractor

    proto = onnx.load(str(src))
    keep = [o.name for o in proto.graph.output if o.name not in PARTS_ONLY]
    pruned = Extractor(proto).extract_model([i.name for i in proto.graph.input], keep)
    onnx.save(pruned, str(dst))
    return Path(dst)


def quantize_int8(src: str | Path, dst: str | Path, per_channel: bool = True) -> Path:
    """ONNX Runtime dynamic int8 quantisation of the MatMul/Gemm weights of the graph at `src`.

    The exported weights reach their MatMuls through Transpose (and the folded-BN Mul) nodes, so
    the graph is first constant-folded by ONNX Runtime's basic optimisations (hardware-neutral);
    the quantiser then sees initializers. Custom-domain FPS/kNN nodes are not MatMul/Gemm and
    pass through untouched."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="recon-int8-") as tmp:
        folded = Path(tmp) / "folded.onnx"
        so = _session_options(src)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        quantize_dynamic(folded, dst, op_types_to_quantize=["MatMul", "Gemm"], per_channel=per_channel,
                         weight_type=QuantType.QInt8)
    return Path(dst)


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

    so = _session_options(path, threads)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _session_options(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    # the pool's threads spin between the ops of a run (fast hand-offs), but stop as the run returns:
    # spinning on afterwards takes a core from whatever runs next (the server's event loop, its client)
    so.add_session_config_entry("session.force_spinning_stop", "1")
    if needs_custom_ops(path):
        from recon_serve.ops import custom_ops_library

        lib = custom_ops_library()
        if lib is None:
            raise RuntimeError(
                f"{path} uses recon_serve custom ops, but their kernel library could not be built "
                "(see the logged reason); export with mode='pure' instead"
            )
        so.register_custom_ops_library(str(lib))
    return so
