"""ONNX side of the custom ops: schemas and the dynamo exporter's translation table.

onnxscript only builds a node for an op whose schema is registered, so `translation_table()`
registers `recon_serve::FarthestPointSample` (attrs npoint, optional skip_origin) and
`recon_serve::KNN` (attr k) first.
"""
from __future__ import annotations

import functools

import onnx
import torch
from onnx.defs import OpSchema

import recon_serve.ops.torch_ops  # noqa: F401  (registers torch.ops.recon_serve)
from recon_serve.ops import DOMAIN

VERSION = 1


def _schema(name: str, inputs: list[str], attr: str, doc: str, optional: tuple[str, ...] = ()) -> OpSchema:
    return OpSchema(
        name, DOMAIN, VERSION, doc=doc,
        inputs=[OpSchema.FormalParameter(i, "T") for i in inputs],
        outputs=[OpSchema.FormalParameter("indices", "tensor(int64)")],
        type_constraints=[("T", ["tensor(float)"], "point coordinates")],
        attributes=[OpSchema.Attribute(attr, OpSchema.AttrType.INT, ""),
                    *(OpSchema.Attribute(a, OpSchema.AttrType.INT, "", required=False) for a in optional)],
    )


SCHEMAS = (
    _schema("FarthestPointSample", ["points"], "npoint", "FPS from index 0: points [B,N,3] -> int64 [B,npoint]; "
            "skip_origin=1 never picks a point with |p|^2 <= 1e-3 after the first (pointnet2_ops)", ("skip_origin",)),
    _schema("KNN", ["points", "query"], "k", "k nearest points, nearest first: [B,N,3],[B,M,3] -> int64 [B,M,k]"),
)


@functools.cache
def translation_table() -> dict:
    """{torch op: onnxscript function} for `torch.onnx.export(custom_translation_table=...)`."""
    from onnxscript.values import Opset

    for s in SCHEMAS:
        if not onnx.defs.has(s.name, s.domain):
            onnx.defs.register_schema(s)
    op = Opset(DOMAIN, VERSION)

    def fps(points, npoint: int, skip_origin: bool = False):
        if skip_origin:
            return op.FarthestPointSample(points, npoint=npoint, skip_origin=1)
        return op.FarthestPointSample(points, npoint=npoint)

    def knn(points, query, k: int):
        return op.KNN(points, query, k=k)

    return {torch.ops.recon_serve.farthest_point_sample.default: fps, torch.ops.recon_serve.knn.default: knn}
