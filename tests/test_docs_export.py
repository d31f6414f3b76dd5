"""README.md's export, batch-embedding and retrain sections run as written, in order, in their own
scratch checkout (they read nothing the first chain writes: tests/readme_blocks.py), so this file
and test_docs.py can run on two workers."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from readme_blocks import chain_commands, run, scratch_checkout


@pytest.mark.slow
def test_readme_export_library_and_retrain_commands_run_as_written(tmp_path, shared_data):
    if not (Path(sys.prefix) / "bin" / "recon-serve").exists():
        pytest.skip("needs the project installed in a virtualenv (README's .venv)")
    work, env = scratch_checkout(tmp_path, shared_data)
    for cmd in chain_commands(export=True):
        run(cmd, work, env)
    c = json.loads((work / "check.json").read_text())  # check-export: the exported graphs against torch
    assert c["max_abs_diff"] < 1e-4 and c["indices_equal"] is True and c["checkpoint_matches_card"], c
    assert "skipped" in c["runtimes"]["tensorrt"] or c["runtimes"]["tensorrt"]["max_abs_diff"] < 1e-3, c["runtimes"]
    assert "ort_pure" in c["runtimes_compared"] and all(i["fps_equal"] and i["knn_equal"] for i in c["indices"].values())
    assert (work / "model_repository" / "recon_python" / "1" / "model.py").is_file()
    assert (work / "model_repository" / "deployments.json").is_file()
    assert (work / "bathtubs").is_dir() and (work / "meshes").is_dir()
