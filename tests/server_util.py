"""Start the real server for tests and benchmarks: `recon-serve serve` (uvicorn) in a subprocess on a free port.

Used by tests/test_server.py, tests/test_server_accuracy.py and bench/bench_server.py (which puts
this directory on sys.path). Not a test module: pytest collects nothing here.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`recon-serve serve` in a subprocess; `stop()` sends SIGTERM (graceful: the index is saved).

    Extra keyword arguments become RECON_<NAME> environment variables (threads=2 -> RECON_THREADS=2;
    the default is RECON_THREADS=1). `ready_timeout` covers the ONNX export on a cold cache.
    """

    def __init__(self, checkpoint: Path, index: Path, cache: Path, log: Path, ready_timeout: float = 120, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {**os.environ, "RECON_CACHE_DIR": str(cache), "RECON_THREADS": "1",
                   **{f"RECON_{k.upper()}": str(v) for k, v in env.items()}}
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recon_serve.cli", "serve", "--port", str(self.port), "--index", str(index),
             "--checkpoint", str(checkpoint), "--backend", "onnxruntime", "--log-level", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT, env=environ, cwd=ROOT)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {log}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server not ready in time; see {log}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
