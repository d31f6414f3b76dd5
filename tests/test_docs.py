"""README.md's commands run as written; CI and the Dockerfile install with README's own lines.

Code blocks are tagged: ```sh (run here, in order, from a scratch copy of the repository root next
to ../shared/data), ```sh server / ```python server (run against a real server this test starts;
its free port replaces 8000), ```sh not-run / ```python not-run (first line says why, e.g. servers,
hours of training, Docker).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server_util import Server

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)


def blocks(tag: str | None = None, lang: str | None = None) -> list[tuple[str, str, str]]:
    found = [(la, t.strip(), body) for la, t, body in BLOCK.findall(README)]
    return [b for b in found if (tag is None or b[1] == tag) and (lang is None or b[0] == lang)]


def commands(body: str) -> list[str]:
    """Shell lines of a block: continuations joined, comments and blank lines dropped."""
    text = re.sub(r"\\\n\s*", " ", body)
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_every_block_is_run_or_says_why():
    assert blocks("", "sh") and blocks("server", "sh") and blocks("server", "python")
    for lang, tag, body in blocks():
        assert lang in ("sh", "python") and tag in ("", "server", "not-run"), (lang, tag)
        if tag == "not-run":
            assert body.startswith("# not run by tests/test_docs.py: "), body[:80]


def test_ci_and_dockerfile_install_with_readmes_lines():
    main = next(c for _, _, b in blocks("not-run", "sh") for c in commands(b) if "recon-serve serve" in c)
    test_cmd = next(c for _, _, b in blocks("not-run", "sh") for c in commands(b) if "pytest" in c)
    install = main.split(" && .venv/bin/recon-serve")[0]
    assert install == "python3 -m venv .venv && .venv/bin/pip install -q -e ."
    assert test_cmd in (ROOT / ".ci" / "run").read_text().splitlines()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert install in dockerfile and "USER recon" in dockerfile and "HEALTHCHECK" in dockerfile


def _run(cmd: str, cwd: Path, env: dict) -> str:
    r = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"README command failed ({r.returncode}): {cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def check_shipped_default_figures(work: Path) -> None:
    """What README's commands wrote for the shipped default, against its model card and issue 11's
    contracts (each figure is computed once, by the command a user runs)."""
    import json

    r = json.loads((work / "eval.json").read_text())  # ModelNet40 test, no voting
    assert r["benchmark"] == "modelnet40" and r["n"] == 2468 and r["oa"] >= 89.5 and r["zero_shot_oa"] >= 87.5, r
    s = json.loads((work / "eval_seg.json").read_text())  # held-out generated part shapes
    assert s["n"] == 680 and s["points"] == 2048 and s["instance_miou"] >= 85.0, s
    d = json.loads((work / "retrieval.json").read_text())  # class-disjoint: classes no stage trained on
    assert d["nn"] >= 0.65 and d["first_tier"] >= 0.38, d
    assert d["nn"] > d["d2"]["nn"] and d["first_tier"] > d["d2"]["first_tier"], d
    assert d["top1"] >= 3 * d["chance"], d
    c = json.loads((work / "check.json").read_text())  # check-export: the exported graphs against torch
    assert c["max_abs_diff"] < 1e-4 and c["indices_equal"] is True and c["checkpoint_matches_card"], c
    assert "ort_pure" in c["runtimes_compared"] and all(i["fps_equal"] and i["knn_equal"] for i in c["indices"].values())
    assert (work / "model_repository" / "recon_python" / "1" / "model.py").is_file()


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path, shared_data):
    venv_bin = Path(sys.prefix) / "bin"
    if not (venv_bin / "recon-serve").exists():
        pytest.skip("needs the project installed in a virtualenv (README's .venv)")
    work = tmp_path / "w" / "repo"  # ../shared/data resolves next to it, as in a checkout
    work.mkdir(parents=True)
    (tmp_path / "w" / "shared").mkdir()
    (tmp_path / "w" / "shared" / "data").symlink_to(shared_data)
    (work / ".venv").symlink_to(sys.prefix)
    for name in ("clients", "models"):
        (work / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RECON_DATA", None)  # the commands name ../shared/data themselves

    for _, _, body in blocks("", "sh"):
        for cmd in commands(body):
            _run(cmd, work, env)
    assert (work / "eval.json").is_file() and (work / "model_repository" / "deployments.json").is_file()
    check_shipped_default_figures(work)

    from recon_serve.settings import Settings

    server = Server(ROOT / "models" / "default" / "recon_default.pt", work / "index", Path(Settings().cache_dir),
                    tmp_path / "server.log")
    try:
        env["PYTHONPATH"] = ""
        for _, _, body in blocks("server", "sh"):
            for cmd in commands(body):
                out = _run(cmd.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"), work, env)
                assert out and not out.startswith('{"error"'), f"{cmd}\n{out[:500]}"
        for _, _, body in blocks("server", "python"):
            script = work / "snippet.py"
            script.write_text(body.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"))
            out = _run(f"{venv_bin / 'python'} snippet.py", work, env)
            assert "chair" in out
    finally:
        server.stop()
