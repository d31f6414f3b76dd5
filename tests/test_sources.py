"""The training sources: every packed reader, the merged vocabulary and the held-out splits."""
import json

import numpy as np
import pytest

from recon_serve.data.packed import load_packed, save_packed
from recon_serve.model.factory import create_model
from training.sources import DISJOINT_SOURCES, SOURCES, build_splits, load_source
from training.train import Recipe, train

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def splits(shared_data):
    return build_splits(shared_data, procedural=1)


def test_packed_reader_casts_to_float32_and_keeps_ids(shared_data):
    s = load_packed(shared_data / "psb" / "psb_train_2048.npz")
    assert s.points.dtype == np.float32 and s.points.shape[1:] == (2048, 3)
    assert len(set(s.ids)) == len(s) and all(i.startswith("normed_psb/") for i in s.ids[:5])
    assert np.allclose(np.linalg.norm(s.points, axis=-1).max(1), 1, atol=1e-2)


def test_class_disjoint_split_shares_no_class_with_training(splits):
    vocab, sp, held = splits
    trained = set(sp["train"].labels.tolist()) | set(sp["val"].labels.tolist())
    disjoint = set(sp["disjoint"].labels.tolist())
    assert disjoint and not disjoint & trained
    assert {vocab.classes[c] for c in disjoint} == set(held)
    for c in held:  # only PSB / SHREC know these classes, and every shape of them is held out
        assert {s for s, _ in vocab.sources[c]} <= set(DISJOINT_SOURCES)
    assert set(sp["disjoint"].sources) <= set(DISJOINT_SOURCES)
    n_source_classes = sum(len(vocab.sources[c]) for c in held)
    assert 0.13 <= n_source_classes / (90 + 55) <= 0.2
    ids = [set(sp[k].ids) for k in ("train", "val", "disjoint", "test")]
    assert sum(map(len, ids)) == len(set().union(*ids))  # no shape in two splits


def test_validation_is_carved_from_training_data_per_class(splits):
    vocab, sp, _ = splits
    assert not any(i.startswith("procedural:") for i in sp["val"].ids)
    assert all(i.split("/")[1] == "train" for i in sp["val"].ids if i.startswith("modelnet40:"))
    assert len(sp["test"]) == 2468 and all("/test/" in i for i in sp["test"].ids)
    chair = vocab.classes.index("chair")
    n_val, n_train = (int((sp[k].labels == chair).sum()) for k in ("val", "train"))
    assert 0.08 < n_val / (n_val + n_train) < 0.12


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_a_tiny_model_trains_a_few_steps_on_each_source(shared_data, teacher, tmp_path, source):
    s = load_source(source, shared_data)
    pick = np.random.default_rng(0).permutation(len(s))[:8]
    names = [s.class_names[c] for c in sorted(set(s.labels[pick].tolist()))]
    y = np.array([names.index(s.class_names[c]) for c in s.labels[pick]])
    model, _ = create_model("micro", num_classes=len(names))
    r = Recipe(stage="pretrain", epochs=1, batch_size=4, warmup_epochs=0, n_points=256, rotate=True, point_dropout=0.5)
    train(model, ([p for p in s.points[pick]], y), r, tmp_path, names, teacher=teacher, progress=False, log=lambda m: None)
    rec = json.loads((tmp_path / "pretrain.log.jsonl").read_text())
    assert all(np.isfinite(rec[k]) for k in ("mdm", "csc_text", "contrast"))


def test_eval_retrieval_contract(shared_data, tmp_path):
    import subprocess
    import sys

    from recon_serve.model.checkpoint import save_checkpoint

    s = load_packed(shared_data / "shrec12" / "shrec12_2048.npz")
    keep = np.isin(s.labels, [0, 1, 2])
    save_packed(tmp_path / "small.npz", s.subset(keep))
    model, _ = create_model("micro", num_classes=3)
    save_checkpoint(tmp_path / "m.pt", model.eval(), class_names=s.class_names[:3])
    out = subprocess.run([sys.executable, "-m", "recon_serve.cli", "eval-retrieval", "--data", str(tmp_path / "small.npz"),
                          "--checkpoint", str(tmp_path / "m.pt"), "--shape-embeddings", "mean_max",
                          "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["n"] == int(keep.sum()) and r["classes"] == 3
    for m in (r, r["d2"], r["text_embedding"], r["candidates"]["mean_max"]):
        assert all(0 <= m[k] <= 1 for k in ("nn", "first_tier", "second_tier", "dcg"))
    assert 0 <= r["p_at_10"] <= 1 and 0 <= r["top1"] <= 1 and r["chance"] == 1 / 3
    assert "D2 shape distribution" in out.stdout
