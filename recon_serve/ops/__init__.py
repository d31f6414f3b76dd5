"""FPS/kNN as custom ops: torch custom ops for export, ONNX schemas, and the ONNX Runtime C++ kernels.

Importing this package needs only torch; the ONNX parts live in `onnx_ops` (needs the `export` extra).
"""
DOMAIN = "recon_serve"  # ONNX domain of FarthestPointSample / KNN

from recon_serve.ops.build import custom_ops_library  # noqa: E402

__all__ = ["DOMAIN", "custom_ops_library"]
