"""Build the ONNX Runtime custom-op library (csrc/point_ops.cc) on demand, or explain why not.

No wheel ships ONNX Runtime's C/C++ headers, so they come from Debian trixie's `libonnxruntime-dev`
(headers only; the library never links libonnxruntime). apt runs with a private sources list and
state dir under the cache, so the system's apt config is never touched and nothing is installed.
Everything lands in ~/.cache/recon-serve (or $RECON_SERVE_CACHE). Any failure is logged and gives
None: callers then fall back to the pure-ONNX model.

Overrides: $RECON_SERVE_ORT_INCLUDE (a dir holding onnxruntime_cxx_api.h) skips the download;
$RECON_SERVE_CUSTOM_OPS (a built .so) skips the build.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "point_ops.cc"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SUITE = "trixie"
PACKAGE = "libonnxruntime-dev"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def cache_dir() -> Path:
    return Path(os.environ.get("RECON_SERVE_CACHE", Path.home() / ".cache" / "recon-serve"))


def debian_mirror() -> str:
    """The Debian archive URI the system already uses (one-line or deb822 sources), else deb.debian.org."""
    etc = Path("/etc/apt")
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list")),
             *sorted((etc / "sources.list.d").glob("*.sources"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for uri in re.findall(r"(?:^deb\s+(?:\[[^\]]*\]\s+)?|^URIs:\s*)(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _run(cmd: list[str], cwd: Path | None = None, timeout: int = 600) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-800:]}")


def fetch_headers() -> Path:
    """The ONNX Runtime include dir, downloading and unpacking libonnxruntime-dev once if needed."""
    if os.environ.get("RECON_SERVE_ORT_INCLUDE"):
        return Path(os.environ["RECON_SERVE_ORT_INCLUDE"])
    root = cache_dir() / "ortdev"
    include = root / "usr" / "include" / "onnxruntime"
    if (include / "onnxruntime_cxx_api.h").is_file():
        return include
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / "ortdev.lock", "w") as lock:  # concurrent callers (test workers) wait for one download
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (include / "onnxruntime_cxx_api.h").is_file():
            return include
        return _download_headers(root, include)


def _download_headers(root: Path, include: Path) -> Path:
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} not found (needs a Debian-like system)")
    apt = cache_dir() / "apt"
    for d in ("lists/partial", "cache/archives/partial", "etc", "deb"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    sources = apt / "etc" / "sources.list"
    sources.write_text(f"deb [signed-by={KEYRING}] {debian_mirror()} {SUITE} main\n")
    opts = [f"-oDir::Etc::sourcelist={sources}", "-oDir::Etc::sourceparts=/dev/null",
            f"-oDir::State::Lists={apt / 'lists'}", f"-oDir::Cache={apt / 'cache'}",
            "-oAcquire::Languages=none", "-qq"]
    _run(["apt-get", *opts, "update"])
    deb_dir = apt / "deb"
    for old in deb_dir.glob("*.deb"):
        old.unlink()
    _run(["apt-get", *opts, "download", PACKAGE], cwd=deb_dir)
    debs = sorted(deb_dir.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download left no {PACKAGE} .deb")
    _run(["dpkg-deb", "-x", str(debs[-1]), str(root)])
    if not (include / "onnxruntime_cxx_api.h").is_file():
        raise RuntimeError(f"{debs[-1].name} has no onnxruntime_cxx_api.h")
    shutil.rmtree(apt, ignore_errors=True)  # the trixie package lists (~20 MB) are needed only once
    return include


def compile_library(include: Path) -> Path:
    """g++ -O3 the kernels into the cache; the file name carries a hash of source + headers."""
    if not shutil.which("g++"):
        raise RuntimeError("g++ not found")
    digest = hashlib.sha256(SOURCE.read_bytes() + (include / "onnxruntime_c_api.h").read_bytes()).hexdigest()[:12]
    out = cache_dir() / f"libpoint_ops-{digest}.so"
    if out.is_file():
        return out
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    # -ffp-contract=off: no FMA, so distances round exactly as torch's (x-c)**2 sums do.
    _run(["g++", "-O3", "-std=c++17", "-fPIC", "-shared", "-fvisibility=hidden", "-ffp-contract=off",
          "-pthread", f"-I{include}", str(SOURCE), "-o", str(tmp)])
    tmp.replace(out)
    return out


@functools.cache
def custom_ops_library() -> Path | None:
    """Path of the ONNX Runtime custom-op library for recon_serve::FarthestPointSample/KNN, or None (logged)."""
    if os.environ.get("RECON_SERVE_CUSTOM_OPS"):
        path = Path(os.environ["RECON_SERVE_CUSTOM_OPS"])
        if path.is_file():
            return path
        log.warning("RECON_SERVE_CUSTOM_OPS=%s is not a file; building instead", path)
    try:
        return compile_library(fetch_headers())
    except Exception as e:  # noqa: BLE001  (any failure means: use the pure-ONNX model)
        log.warning("custom-op library unavailable, use the pure ONNX model: %s", e)
        return None
