"""README.md's commands run as written (the first chain here, the export / library / retrain one in
test_docs_export.py; tests/readme_blocks.py says how blocks are tagged and split); CI and the
Dockerfile install with README's own lines."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from readme_blocks import EXPORT_SECTIONS, ROOT, blocks, chain_commands, commands, run, scratch_checkout
from server_util import Server


def test_every_block_is_run_or_says_why():
    assert blocks("", "sh") and blocks("server", "sh") and blocks("server", "python")
    for lang, tag, body, _ in blocks():
        assert lang in ("sh", "python") and tag in ("", "server", "not-run"), (lang, tag)
        if tag == "not-run":
            assert body.startswith("# not run by tests/test_docs.py: "), body[:80]
    # the second chain (test_docs_export.py) is found by its headings, and no server block is in it
    assert set(EXPORT_SECTIONS) <= {section for *_, section in blocks("", "sh")}
    assert not {section for *_, section in blocks("server")} & set(EXPORT_SECTIONS)


def test_ci_and_dockerfile_install_with_readmes_lines():
    main = next(c for _, _, b, _ in blocks("not-run", "sh") for c in commands(b) if "recon-serve serve" in c)
    test_cmd = next(c for _, _, b, _ in blocks("not-run", "sh") for c in commands(b) if "pytest" in c)
    install = main.split(" && .venv/bin/recon-serve")[0]
    assert install == "python3 -m venv .venv && .venv/bin/pip install -q -e ."
    assert test_cmd in (ROOT / ".ci" / "run").read_text().splitlines()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert install in dockerfile and "USER recon" in dockerfile and "HEALTHCHECK" in dockerfile


def check_shipped_default_figures(work: Path) -> None:
    """What README's commands wrote for the shipped default, against its model card and issue 11's
    contracts (each figure is computed once, by the command a user runs)."""
    r = json.loads((work / "eval.json").read_text())  # ModelNet40 test, no voting
    assert r["benchmark"] == "modelnet40" and r["n"] == 2468 and r["oa"] >= 89.5 and r["zero_shot_oa"] >= 87.5, r
    s = json.loads((work / "eval_seg.json").read_text())  # held-out generated part shapes
    assert s["n"] == 680 and s["points"] == 2048 and s["instance_miou"] >= 85.0, s
    d = json.loads((work / "retrieval.json").read_text())  # class-disjoint: classes no stage trained on
    assert d["nn"] >= 0.65 and d["first_tier"] >= 0.38, d
    assert d["nn"] > d["d2"]["nn"] and d["first_tier"] > d["d2"]["first_tier"], d
    assert d["top1"] >= 3 * d["chance"], d


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path, shared_data):
    venv_bin = Path(sys.prefix) / "bin"
    if not (venv_bin / "recon-serve").exists():
        pytest.skip("needs the project installed in a virtualenv (README's .venv)")
    work, env = scratch_checkout(tmp_path, shared_data)
    for cmd in chain_commands(export=False):
        run(cmd, work, env)
    assert (work / "eval.json").is_file() and (work / "index").is_dir()
    check_shipped_default_figures(work)

    from recon_serve.settings import Settings

    server = Server(ROOT / "models" / "default" / "recon_default.pt", work / "index", Path(Settings().cache_dir),
                    tmp_path / "server.log")
    try:
        env["PYTHONPATH"] = ""
        for _, _, body, _ in blocks("server", "sh"):
            for cmd in commands(body):
                out = run(cmd.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"), work, env)
                assert out and not out.startswith('{"error"'), f"{cmd}\n{out[:500]}"
        for _, _, body, _ in blocks("server", "python"):
            script = work / "snippet.py"
            script.write_text(body.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"))
            out = run(f"{venv_bin / 'python'} snippet.py", work, env)
            assert "chair" in out
    finally:
        server.stop()
