"""Model export: ONNX graphs (`onnx`), Triton model repositories (`triton_repo`), the bundled Triton
server for tests and CPU serving (`triton_server`), and export checks against torch (`check`)."""
