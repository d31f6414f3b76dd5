"""Run the Triton server bundled in the `nvidia-pytriton` wheel on a model repository (CPU, python backend).

Why this shape (see shared/notes/dependencies-checked.md, section 3): pip's `tritonserver` has no server,
but `nvidia-pytriton` 0.7.0 ships a real tritonserver 2.51 with the python backend only. That backend
needs numpy<2, which the project venv does not have, so the server gets a venv of its own
(`triton_python_env()`, cached), and the launch repeats the three fixes the notes found:
LD_LIBRARY_PATH = interpreter LIBDIR + nvidia_pytriton.libs, the stub/backend copied into a private
backend dir, and model.py putting that venv's site-packages on sys.path (the stub ignores PYTHONPATH).
"""
from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from recon_serve.ops.build import cache_dir

PYTRITON = "nvidia-pytriton==0.7.0"
READY_MARKER = ".recon-serve-ready"


def triton_requirements() -> list[str]:
    """What the server's venv holds: the server wheel, numpy<2 for its python backend, and the same ORT as here."""
    try:
        ort = f"onnxruntime=={importlib.metadata.version('onnxruntime')}"
    except importlib.metadata.PackageNotFoundError:
        ort = "onnxruntime"
    return [PYTRITON, "numpy<2", ort]


@dataclass(frozen=True)
class PythonEnv:
    """An interpreter the Triton python backend can use: its python, site-packages and LIBDIR (for libpython)."""

    python: Path
    site_packages: Path
    libdir: Path
    version: str  # "3.11": picks the matching triton_python_backend_stub


def describe_env(python: str | Path) -> PythonEnv:
    code = ("import json, sys, sysconfig; print(json.dumps([sysconfig.get_paths()['purelib'], "
            "sysconfig.get_config_var('LIBDIR'), '%d.%d' % sys.version_info[:2]]))")
    site, libdir, version = json.loads(subprocess.check_output([str(python), "-c", code], text=True))
    return PythonEnv(Path(python), Path(site), Path(libdir), version)


def triton_python_env(root: str | Path | None = None, timeout: float = 1800) -> PythonEnv:
    """The cached venv (~/.cache/recon-serve/triton-venv) for the server, created on first use.

    A file lock makes concurrent callers wait for one creation; a marker written last means a half-built
    venv (crash, timeout) is rebuilt rather than trusted. Raises RuntimeError with pip's output on failure.
    """
    root = Path(root) if root else cache_dir() / "triton-venv"
    wanted = triton_requirements()
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = root / READY_MARKER
        if marker.is_file() and json.loads(marker.read_text()).get("requirements") == wanted:
            return describe_env(root / "bin" / "python")
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.time()
        steps = [[sys.executable, "-m", "venv", str(root)],
                 [str(root / "bin" / "python"), "-m", "pip", "install", "--no-input", "--quiet", *wanted]]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if r.returncode:
                shutil.rmtree(root, ignore_errors=True)
                raise RuntimeError(f"creating the Triton venv failed at {' '.join(cmd[2:5])}: "
                                   f"{(r.stderr or r.stdout).strip()[-1500:]}")
        marker.write_text(json.dumps({"requirements": wanted, "seconds": round(time.time() - t0, 1)}))
        return describe_env(root / "bin" / "python")


@dataclass(frozen=True)
class BundledServer:
    """Paths inside an installed nvidia-pytriton."""

    binary: Path
    libs: Path  # nvidia_pytriton.libs: libtritonserver, libcudart, ... (the stub's RPATH is lost once copied)
    python_backend: Path  # libtriton_python.so + triton_python_backend_utils.py
    stub: Path

    @classmethod
    def find(cls, env: PythonEnv) -> "BundledServer":
        pkg = env.site_packages / "pytriton" / "tritonserver"
        found = cls(pkg / "bin" / "tritonserver", env.site_packages / "nvidia_pytriton.libs",
                    pkg / "backends" / "python", pkg / "python_backend_stubs" / env.version / "triton_python_backend_stub")
        missing = [str(p) for p in (found.binary, found.libs, found.python_backend, found.stub) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"nvidia-pytriton in {env.site_packages} lacks {missing}")
        return found


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class TritonServer:
    """`with TritonServer(repo, models=["recon_python"]) as t:` -> t.http_url / t.grpc_url, stopped on exit.

    Explicit model control loads only `models`: the `onnxruntime_onnx` model in the same repository needs
    a backend this bundled server lacks, and would otherwise fail the whole start.
    """

    def __init__(self, model_repository: str | Path, models=("recon_python",), env: PythonEnv | None = None,
                 ready_timeout: float = 120.0):
        self.repository = Path(model_repository).resolve()
        self.models = list(models)
        self.env = env
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None
        self.http_port = self.grpc_port = self.metrics_port = 0
        self.start_seconds = 0.0

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _backend_dir(self, server: BundledServer) -> Path:
        backends = self._tmp / "backends" / "python"
        backends.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy2(server.python_backend / name, backends / name)
        shutil.copy2(server.stub, backends / "triton_python_backend_stub")
        return backends.parent

    def start(self) -> "TritonServer":
        env = self.env or triton_python_env()
        server = BundledServer.find(env)
        self._tmp = Path(tempfile.mkdtemp(prefix="recon-triton-"))
        self.log_path = self._tmp / "tritonserver.log"
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        cmd = [str(server.binary), f"--model-repository={self.repository}",
               f"--backend-directory={self._backend_dir(server)}",
               "--model-control-mode=explicit", *(f"--load-model={m}" for m in self.models),
               "--http-address=127.0.0.1", f"--http-port={self.http_port}",
               "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
               "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}", "--allow-gpu-metrics=false",
               "--pinned-memory-pool-byte-size=0", "--exit-on-error=true", "--log-verbose=0"]
        proc_env = {**os.environ,
                    "LD_LIBRARY_PATH": os.pathsep.join([str(env.libdir), str(server.libs),
                                                        os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep),
                    "PYTHONPATH": str(env.site_packages)}  # kept for tools; the stub itself ignores it
        t0 = time.time()
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=proc_env,
                                        cwd=self._tmp, start_new_session=True)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.time() - t0
        return self

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def _wait_ready(self) -> None:
        deadline = time.time() + self.ready_timeout
        url = f"http://{self.http_url}/v2/health/ready"
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode} before it was ready; "
                                   f"log tail:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"tritonserver not ready after {self.ready_timeout:.0f} s; log tail:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Triton unloads models and stops their stubs
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)  # its own session: the stubs go with it
                self.process.wait()
        self.process = None
        if getattr(self, "_tmp", None):
            self.final_log = self.log_tail()
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
