"""A Chromium binary for the browser test (tests/test_viewer.py), installed with apt when missing.

Playwright drives the system Chromium through `executable_path` (its own browser download needs
network access to its CDN). `chromium_path()` returns, in order: $RECON_CHROMIUM, a `chromium` /
`chromium-browser` / `google-chrome` on PATH, else installs Debian's `chromium` package
(`apt-get install -y chromium`, after `apt-get update` if the first try fails; `sudo -n` when not
root) once, under a file lock so parallel test processes do not race. Not a test module.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Software WebGL (SwiftShader through ANGLE) so the canvas draws on machines without a GPU.
LAUNCH_ARGS = [
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--no-sandbox",  # root in CI containers
    "--disable-dev-shm-usage",
]


class BrowserUnavailable(RuntimeError):
    pass


def _find() -> str | None:
    env = os.environ.get("RECON_CHROMIUM")
    if env:
        if not Path(env).is_file():
            raise BrowserUnavailable(f"RECON_CHROMIUM={env} is not a file")
        return env
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _apt(*args: str) -> subprocess.CompletedProcess:
    cmd = ["apt-get", *args]
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            raise BrowserUnavailable("chromium is missing and apt-get needs root (no sudo found); "
                                     "install it with `apt-get install -y chromium` or set RECON_CHROMIUM")
        cmd = ["sudo", "-n", *cmd]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)


def install_chromium() -> str:
    if not shutil.which("apt-get"):
        raise BrowserUnavailable("chromium is missing and there is no apt-get to install it; set RECON_CHROMIUM")
    lock = Path(tempfile.gettempdir()) / "recon-serve-chromium-install.lock"
    with lock.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # a second process waits, then finds the installed binary
        path = _find()
        if path:
            return path
        args = ("install", "-y", "--no-install-recommends", "chromium")
        r = _apt(*args)
        if r.returncode != 0:  # stale package lists
            _apt("update")
            r = _apt(*args)
        path = _find()
        if r.returncode != 0 or not path:
            raise BrowserUnavailable(f"apt-get install chromium failed ({r.returncode}):\n{r.stdout[-3000:]}")
        return path


def chromium_path() -> str:
    return _find() or install_chromium()
