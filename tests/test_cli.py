import json
import os
import subprocess
import sys

import pytest
import torch

from recon_serve.model.checkpoint import save_checkpoint
from recon_serve.model.factory import create_model

MODELNET10 = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]


def _cli(*args, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "recon_serve.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


@pytest.mark.data
def test_eval_contract_on_an_untrained_checkpoint(tmp_path, shared_data):
    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=10)
    save_checkpoint(tmp_path / "m.pt", model.eval(), class_names=MODELNET10, teacher="all-MiniLM-L6-v2")
    out = _cli("eval", "--benchmark", "modelnet10", "--votes", "1", "--checkpoint", str(tmp_path / "m.pt"),
               "--data", str(shared_data), "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["n"] == 908 and {"oa", "macc", "zero_shot_oa"} <= set(r)
    assert 0 <= r["oa"] <= 100 and "overall accuracy" in out.stdout
    # the same figures through the ONNX Runtime graph the server runs (fp32: equal up to near-ties)
    out = _cli("eval", "--benchmark", "modelnet10", "--votes", "1", "--checkpoint", str(tmp_path / "m.pt"),
               "--data", str(shared_data), "--runtime", "onnxruntime", "--json", str(tmp_path / "ort.json"),
               env={"RECON_CACHE_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    ort = json.loads((tmp_path / "ort.json").read_text())
    assert ort["runtime"] == "onnxruntime" and abs(ort["oa"] - r["oa"]) <= 0.5
    assert _cli("eval", "--int8", "--checkpoint", str(tmp_path / "m.pt")).returncode == 2  # int8 needs onnxruntime


MODELNET40 = ["airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup",
              "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop",
              "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa",
              "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox"]


@pytest.mark.data
def test_eval_modelnet40_contract_restricts_a_larger_head(tmp_path, shared_data):
    """A head of 42 merged-vocabulary classes (spelled as words, two extra) is scored on ModelNet40's 40."""
    from recon_serve.data.vocabulary import canonical

    torch.manual_seed(0)
    names = ["dragon"] + [canonical(c) for c in reversed(MODELNET40)] + ["bee"]
    model, _ = create_model("micro", num_classes=len(names))
    save_checkpoint(tmp_path / "m.pt", model.eval(), class_names=names)
    out = _cli("eval", "--votes", "2", "--checkpoint", str(tmp_path / "m.pt"), "--data", str(shared_data),
               "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["benchmark"] == "modelnet40" and r["n"] == 2468 and r["votes"] == 2
    assert {"oa", "macc", "oa_vote", "zero_shot_oa", "oa_unrestricted"} <= set(r)
    assert "restricted to the 40 benchmark classes among the head's 42" in r["restriction"]
    assert r["oa_unrestricted"] <= r["oa"]
    save_checkpoint(tmp_path / "mn10.pt", create_model("micro", num_classes=10)[0].eval(), class_names=MODELNET10)
    out = _cli("eval", "--checkpoint", str(tmp_path / "mn10.pt"), "--data", str(shared_data))
    assert out.returncode == 2 and "cannot be scored" in out.stderr


# The shipped default's figures (ModelNet40 eval, eval-seg, class-disjoint retrieval) are checked
# against its model card in tests/test_docs.py, on the files README's own commands write.


def test_finetune_seg_then_eval_seg_contract(tmp_path):
    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=10)
    save_checkpoint(tmp_path / "init.pt", model.eval(), class_names=MODELNET10)
    train = subprocess.run([sys.executable, "-m", "training.cli", "finetune-seg", "--init", str(tmp_path / "init.pt"),
                            "--run", str(tmp_path), "--per-category", "2", "--points", "256", "--epochs", "1",
                            "--batch-size", "16", "--test-per-category", "1"], capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    out = _cli("eval-seg", "--checkpoint", str(tmp_path / "seg.pt"), "--per-category", "1", "--points", "256",
               "--json", str(tmp_path / "s.json"))
    assert out.returncode == 0, out.stderr
    r = json.loads((tmp_path / "s.json").read_text())
    assert {"instance_miou", "class_miou"} <= set(r) and r["n"] == 34 and 0 <= r["instance_miou"] <= 100
    # the frozen encoder leaves the classification answers untouched
    before, _ = create_model(tmp_path / "init.pt")
    after, ckpt = create_model(tmp_path / "seg.pt")
    x = torch.rand(2, 256, 3)
    with torch.no_grad():
        assert torch.equal(before(x)["logits"], after(x)["logits"])
    assert len(ckpt["part_names"]) == after.cfg.num_parts and "chair/seat" in ckpt["part_names"]


def test_finetune_seg_refines_a_trained_head_with_local_descriptor_and_balance(tmp_path):
    """The refine step of the default recipe: start from a seg checkpoint, grow the head, weight rare parts."""
    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=10)
    save_checkpoint(tmp_path / "init.pt", model.eval(), class_names=MODELNET10)
    common = ["--per-category", "2", "--points", "256", "--epochs", "1", "--batch-size", "16", "--test-per-category", "1"]
    for init, run, extra in (("init.pt", "a", ["--part-balance", "0"]),
                             ("a/seg.pt", "b", ["--seg-local-k", "8", "--part-balance", "0.5"])):
        r = subprocess.run([sys.executable, "-m", "training.cli", "finetune-seg", "--init", str(tmp_path / init),
                            "--run", str(tmp_path / run), *common, *extra], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    assert "head grown" in (tmp_path / "b" / "train.log").read_text()
    first, _ = create_model(tmp_path / "a" / "seg.pt")
    refined, ckpt = create_model(tmp_path / "b" / "seg.pt")
    assert refined.cfg.seg_local_k == 8 and refined.seg_head.local is not None
    assert [s["part_balance"] for s in ckpt["recipe"]["stages"]][-2:] == [0.0, 0.5]
    x = torch.rand(2, 256, 3)
    with torch.no_grad():
        assert torch.equal(first(x)["logits"], refined(x)["logits"])
        assert not torch.equal(first(x)["part_logits"], refined(x)["part_logits"])
