"""`python -m recon_serve.warmup [CHECKPOINT]`: do the slow first-start work ahead of time.

Builds the FPS/kNN custom-op library (falls back to pure ONNX when it cannot) and exports the
checkpoint (default: the shipped model) into the ONNX cache the server reads (the parts and
global graphs, and the int8 one when RECON_INT8=1), so a container image
or a fresh host starts serving in seconds and needs no network later.
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv=None) -> int:
    from recon_serve.backends.ort_backend import GRAPHS, export_cached
    from recon_serve.model.factory import DEFAULT_CHECKPOINT
    from recon_serve.ops import custom_ops_library
    from recon_serve.settings import Settings

    args = sys.argv[1:] if argv is None else argv
    lib = custom_ops_library()
    print(f"custom ops: {lib or 'unavailable, pure ONNX graphs will be used'}")
    settings = Settings.from_env()
    for graph in GRAPHS if settings.int8 else GRAPHS[:2]:
        out = export_cached(Path(args[0] if args else DEFAULT_CHECKPOINT), Path(settings.cache_dir), graph)
        print(f"exported {graph} graph to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
