"""Model export (ONNX now; TensorRT/Triton later)."""
