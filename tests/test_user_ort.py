"""A user's own onnxruntime session (the README's documented library registration) runs an export."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recon_serve.model.checkpoint import save_checkpoint
from recon_serve.model.factory import create_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.data
def test_exported_model_runs_in_a_plain_ort_session_on_a_real_mesh(tmp_path, shared_data):
    from recon_serve.export.triton_repo import write_model_repository

    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=10)
    save_checkpoint(tmp_path / "m.pt", model.eval(), class_names=[f"c{i}" for i in range(10)])
    write_model_repository(tmp_path / "m.pt", tmp_path / "repo")
    onnx_path = next((tmp_path / "repo" / "recon_python").glob("*/model.onnx"))
    out = subprocess.run([sys.executable, str(ROOT / "clients/examples/own_ort_session.py"), str(onnx_path),
                          str(shared_data / "meshes" / "chair_model.obj"), "--up", "y"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "embedding (1, 384) norm 1.0000" and lines[0].split()[0].startswith("c")
