"""training/gpu.py, the lent-GPU fine-tuning kit, end to end on this CPU with a micro model: the pack
round-trips its clouds within the 8-bit bound, the run trains within its time box with the packed
caption features only, and the weights come back in pieces that rebuild the trained model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recon_serve.model.checkpoint import read_checkpoint, save_checkpoint
from recon_serve.model.factory import create_model, model_from_checkpoint
from recon_serve.model.text import TEMPLATES, class_text
from training import gpu

NAMES = [["chair", "armchair"], ["table"], ["lamp"], ["airplane", "aeroplane"]]


def _clouds(n, rng):
    """n clouds of 256 points, one shape family per class (sphere, flat box, rod, cross)."""
    y = np.arange(n) % len(NAMES)
    scale = np.array([[1, 1, 1], [1, 1, 0.1], [0.1, 0.1, 1], [1, 0.2, 0.2]], np.float32)[y]
    pts = rng.normal(size=(n, 256, 3)).astype(np.float32) * scale[:, None]
    return pts / np.linalg.norm(pts, axis=2).max(axis=1)[:, None, None], y


def test_quantised_clouds_stay_within_half_a_step():
    pts, _ = _clouds(8, np.random.default_rng(0))
    codes, lo, step = gpu.quantise(pts)
    assert codes.dtype == np.uint8 and codes.nbytes == pts.size
    back = codes.astype(np.float32) * step[:, None, None] + lo[:, None]
    assert np.abs(back - pts).max() <= step.max() / 2 + 1e-6
    norm = gpu.dequantise(codes, lo, step)
    assert np.allclose(np.linalg.norm(norm, axis=2).max(axis=1), 1.0, atol=1e-5)


def test_feature_teacher_refuses_a_caption_the_pack_lacks():
    t = gpu.FeatureTeacher(["a chair"], np.ones((1, 4), np.float16), "fake")
    assert t(["a chair"]).shape == (1, 4)
    with pytest.raises(KeyError, match="not in the pack"):
        t(["a lamp"])


@pytest.mark.slow
def test_pack_run_and_pieces_rebuild_the_trained_model(tmp_path):
    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=len(NAMES))
    model.set_num_parts(3)  # the pack leaves the part head out
    save_checkpoint(tmp_path / "init.pt", model.eval(), class_names=[n[0] for n in NAMES])
    rng = np.random.default_rng(0)
    prompts = sorted({t.format(class_text(n)) for ns in NAMES for n in ns for t in TEMPLATES})
    features = rng.normal(size=(len(prompts), 384))
    meta = gpu.write_pack(tmp_path / "pack", _clouds(64, rng), _clouds(16, rng), NAMES, prompts,
                          features / np.linalg.norm(features, axis=1, keepdims=True), "fake-teacher",
                          read_checkpoint(tmp_path / "init.pt"), {"init": str(tmp_path / "init.pt")})
    assert meta["n_points"] == 256 and meta["train"] == 64 and meta["classes"] == 4
    assert "seg_head.head.weight" not in torch.load(tmp_path / "pack" / "init.pt", weights_only=False)["state_dict"]

    summary = gpu.run(tmp_path / "pack", tmp_path / "out", seconds=8, recipe_overrides={"batch_size": 16},
                      log=lambda *_: None)
    assert summary["recipe"]["epochs"] >= 1 and summary["recipe"]["save_state"] is False
    assert len(summary["epochs_log"]) == summary["recipe"]["epochs"]
    assert all(np.isfinite(e["ce"]) and e["contrast"] > 0 for e in summary["epochs_log"])  # in-batch text contrast ran
    assert 0 <= summary["val_final_ema"]["oa"] <= 100 and "zero_shot_oa" in summary["val_final_ema"]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["pieces"] == summary["pieces"]

    state = {}
    for name in summary["pieces"]:
        state.update(torch.load(tmp_path / "out" / name, weights_only=True))
    rebuilt = model_from_checkpoint({"config": summary["config"], "state_dict": state})
    start = model_from_checkpoint({"config": summary["config"], "state_dict": {
        k: v.float() for k, v in torch.load(tmp_path / "pack" / "init.pt", weights_only=False)["state_dict"].items()}})
    x = torch.from_numpy(_clouds(4, rng)[0])
    with torch.no_grad():
        assert not torch.allclose(rebuilt.head_logits(*rebuilt.features(x)), start.head_logits(*start.features(x)))


def test_pieces_stay_under_the_limit(tmp_path):
    state = {f"w{i}": torch.zeros(1000) for i in range(10)}  # 4,000 bytes each
    names = gpu.save_pieces(state, tmp_path, limit=10_000)
    assert names == ["weights.0.pt", "weights.1.pt", "weights.2.pt", "weights.3.pt", "weights.4.pt"]
    back = {}
    for n in names:
        back.update(torch.load(tmp_path / n, weights_only=True))
    assert back.keys() == state.keys()
