# recon-serve: `recon-serve serve` on the shipped default model.
#   CPU:  docker build -t recon-serve .
#   GPU:  docker build -t recon-serve:gpu --build-arg VARIANT=gpu --build-arg BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 .
#   run:  docker run -p 8000:8000 -v $PWD/index:/data/index recon-serve
# Volumes: /data/index (the shape index) and /data/models (a model repository; serve it with
# -e RECON_CHECKPOINT=/data/models). The install line is README's, which CI runs too (tests/test_docs.py).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG VARIANT=cpu

# python3-venv for the CUDA base; g++ builds the FPS/kNN custom-op library; curl for the health check
RUN apt-get update && apt-get install -y --no-install-recommends g++ curl \
    && if [ "$VARIANT" = gpu ]; then apt-get install -y --no-install-recommends python3 python3-venv; fi \
    && rm -rf /var/lib/apt/lists/* && useradd --create-home --uid 1001 recon
WORKDIR /app
COPY --chown=recon:recon . /app
USER recon

# CPU: torch's CPU wheels (PyPI's default Linux torch is the multi-GB CUDA build); GPU: PyPI's CUDA torch,
# then the GPU twins of onnxruntime and faiss, and TensorRT. Last: build the custom ops and export the
# shipped model to ONNX now, so the container starts fast and needs no network.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN export PIP_EXTRA_INDEX_URL="$([ "$VARIANT" = gpu ] || echo "$TORCH_INDEX")" \
    && python3 -m venv .venv && .venv/bin/pip install -q -e . \
    && if [ "$VARIANT" = gpu ]; then .venv/bin/pip uninstall -y -q onnxruntime faiss-cpu \
       && .venv/bin/pip install -q onnxruntime-gpu faiss-gpu-cu12 tensorrt; fi \
    && .venv/bin/python -m recon_serve.warmup

ENV RECON_INDEX_DIR=/data/index
VOLUME ["/data/index", "/data/models"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD curl -fsS http://127.0.0.1:8000/readyz || exit 1
CMD [".venv/bin/recon-serve", "serve", "--host", "0.0.0.0", "--port", "8000"]
