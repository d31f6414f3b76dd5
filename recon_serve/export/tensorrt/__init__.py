"""TensorRT for the exported graph: IPluginV3 plugins for FarthestPointSample / KNN (point_plugins.cpp,
over the CUDA kernels of recon_serve/ops/cuda) and an engine builder (build.py, `tensorrt` module)."""
