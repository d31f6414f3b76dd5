"""README.md's code blocks and a scratch checkout to run them in (tests/test_docs*.py).

Blocks are tagged: ```sh (run, in order, from a scratch copy of the repository root next to
../shared/data), ```sh server / ```python server (run against a real server the test starts; its
free port replaces 8000), ```sh not-run / ```python not-run (first line says why). The runnable
blocks form two independent chains, so the two test files can run on two workers: the export,
batch-embedding and retrain sections (EXPORT_SECTIONS, which read nothing the others write), and the
rest with the server blocks. Not a test module: pytest collects nothing here.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)
HEADING = re.compile(r"^## (.+)$", re.M)
EXPORT_SECTIONS = ("Export to ONNX and Triton", "Batch-embed a shape library", "Retrain and redeploy without downtime")


def blocks(tag: str | None = None, lang: str | None = None) -> list[tuple[str, str, str, str]]:
    """(lang, tag, body, section: the `## ` heading above it), in README order."""
    heads = [(m.start(), m.group(1).strip()) for m in HEADING.finditer(README)]
    found = []
    for m in BLOCK.finditer(README):
        section = next((h for pos, h in reversed(heads) if pos < m.start()), "")
        found.append((m.group(1), m.group(2).strip(), m.group(3), section))
    return [b for b in found if (tag is None or b[1] == tag) and (lang is None or b[0] == lang)]


def commands(body: str) -> list[str]:
    """Shell lines of a block: continuations joined, comments and blank lines dropped."""
    text = re.sub(r"\\\n\s*", " ", body)
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def chain_commands(export: bool) -> list[str]:
    """The runnable `sh` lines of one chain, in README order."""
    return [c for _, _, body, section in blocks("", "sh") if (section in EXPORT_SECTIONS) == export
            for c in commands(body)]


def scratch_checkout(tmp_path: Path, shared_data: Path) -> tuple[Path, dict]:
    """(work dir laid out like a checkout next to ../shared/data, environment with the venv on PATH)."""
    venv_bin = Path(sys.prefix) / "bin"
    work = tmp_path / "w" / "repo"  # ../shared/data resolves next to it, as in a checkout
    work.mkdir(parents=True)
    (tmp_path / "w" / "shared").mkdir()
    (tmp_path / "w" / "shared" / "data").symlink_to(shared_data)
    (work / ".venv").symlink_to(sys.prefix)
    for name in ("clients", "models"):
        (work / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RECON_DATA", None)  # the commands name ../shared/data themselves
    return work, env


def run(cmd: str, cwd: Path, env: dict) -> str:
    r = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"README command failed ({r.returncode}): {cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout
