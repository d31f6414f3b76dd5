"""Official qizekun/ReCon checkpoints served faithfully: parity with the official maths (test-only
reference in official_reference.py), pointnet2_ops' FPS rule in every grouping path, labels-only
fine-tune checkpoints, the CLIP text tower and the import command."""
from __future__ import annotations

import logging
import subprocess
import sys

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from official_reference import (OfficialClipText, OfficialFinetune, OfficialZeroShot, official_class_features,
                                official_group, pointnet2_fps, randomise_norms, write_tiny_vocab)
from server_util import Server

from recon_serve.geometry.group import farthest_point_sample
from recon_serve.model.clip_text import ClipTokenizer, find_vocab, load_clip_text
from recon_serve.model.factory import create_model
from recon_serve.model.official import MODELNET40_NAMES, SCANOBJECTNN_NAMES, convert_official, import_official

G, S, N = 16, 8, 256
LABELS = ["chair", "lamp", "table", "airplane", "bookshelf"]


def clouds_near_origin(b: int = 3, seed: int = 0) -> np.ndarray:
    """Unit-sphere clouds with a few points inside |p|^2 <= 1e-3 (which plain FPS picks early, being
    far from the surface, and pointnet2_ops never picks) and one exactly at the origin."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, N, 3))
    x /= np.linalg.norm(x, axis=-1, keepdims=True) * rng.uniform(1, 1.3, size=(b, N, 1))
    inner = rng.normal(size=(b, 12, 3))
    x[:, 1:13] = inner / np.linalg.norm(inner, axis=-1, keepdims=True) * rng.uniform(0.0, 0.03, size=(b, 12, 1))
    x[:, 13] = 0.0
    return x.astype(np.float32)


def _save_official(module, path, bare=False):
    sd = {"module." + k: v for k, v in module.state_dict().items()}
    torch.save(sd if bare else {"base_model": sd, "epoch": 300}, path)


@pytest.fixture(scope="module")
def zero_shot_files(tmp_path_factory):
    """An official zero-shot checkpoint (random weights), its config, and a tiny random CLIP text
    tower (open_clip state-dict layout) with a tiny BPE vocabulary beside it."""
    d = tmp_path_factory.mktemp("official")
    torch.manual_seed(0)
    official = OfficialZeroShot(d=48, h=2, depth=2, clip_dim=32).eval()
    randomise_norms(official)
    _save_official(official, d / "ckpt-zeroshot.pth")
    (d / "zeroshot.yaml").write_text(
        "dataset : {train : { _base_: cfgs/dataset_configs/ModelNet40.yaml, others: {subset: 'train'}}}\n"
        f"model : {{NAME: PointTransformerZeroShot, trans_dim: 48, depth: 2, num_heads: 2, group_size: {S},\n"
        f"  num_group: {G}, encoder_dims: 48, type: 'full', ratio: 0.25, text_encoder: 'ViT-B/32'}}\n"
        f"npoints: {N}\n")
    vocab = write_tiny_vocab(d / "bpe_simple_vocab_16e6.txt.gz")
    clip = OfficialClipText(vocab, width=128, layers=2, heads=2, embed=32).eval()  # CLIP: heads = width // 64
    randomise_norms(clip)
    torch.save(clip.state_dict(), d / "tiny-clip.pt")
    import_official(d / "ckpt-zeroshot.pth", d / "zeroshot.pt", config=d / "zeroshot.yaml")
    return d, official, clip


def test_fps_skips_points_near_the_origin_as_pointnet2_ops(tmp_path):
    from recon_serve.export.onnx import export_grouping_onnx, ort_session
    from recon_serve.ops import custom_ops_library

    x = clouds_near_origin()
    want = np.stack([pointnet2_fps(c, G) for c in x])
    assert not np.isin(want[:, 1:], np.arange(1, 14)).any()  # the rule holds in the reference itself
    ours = farthest_point_sample(torch.from_numpy(x), G, skip_origin=True).numpy()
    np.testing.assert_array_equal(ours, want)
    assert not np.array_equal(farthest_point_sample(torch.from_numpy(x), G).numpy(), want)  # the rule matters here
    all_inside = np.full((1, 64, 3), 0.01, dtype=np.float32)  # every point skipped: index 0 again and again
    assert farthest_point_sample(torch.from_numpy(all_inside), 4, skip_origin=True).tolist() == [[0, 0, 0, 0]]
    modes = ["pure"] + (["custom_op"] if custom_ops_library() is not None else [])
    for mode in modes:
        sess = ort_session(export_grouping_onnx(G, S, tmp_path / f"{mode}.onnx", mode, skip_origin=True))
        centres = sess.run(["centre_idx"], {"points": x})[0]
        np.testing.assert_array_equal(centres, want, err_msg=mode)
    assert "custom_op" in modes, "the C++ kernel library did not build"


def test_zero_shot_checkpoint_matches_the_official_maths(zero_shot_files):
    d, official, clip = zero_shot_files
    model, ckpt = create_model(d / "zeroshot.pt")
    cfg = model.cfg
    assert (cfg.num_group, cfg.group_size, cfg.num_points, cfg.up_axis, cfg.fps_skip_origin) == (G, S, N, "y", True)
    assert (cfg.text_weight, cfg.img_weight) == (0.25, 1.0) and ckpt["teacher"] == "clip:ViT-B-32"
    x = torch.from_numpy(clouds_near_origin())
    with torch.no_grad():
        patches, centres, _ = official_group(x, G, S)
        theirs = F.normalize(official(patches, centres), dim=-1)
        ours = model(x)["embedding"]
    assert (ours - theirs).abs().max() <= 1e-5

    tower = load_clip_text("ViT-B-32-quickgelu", d / "tiny-clip.pt")  # a state dict: say QuickGELU (OpenAI)
    with torch.no_grad():
        ids = tower.tokenizer(["a point cloud of a chair."])
        assert (tower([ "a point cloud of a chair."]) - clip(ids)).abs().max() <= 1e-5
    from recon_serve.model.text import PROMPTS, zero_shot_weights

    templates, words = PROMPTS[ckpt["prompts"]]
    ref = F.normalize(official_class_features(clip, tower.tokenizer, LABELS), dim=-1)
    assert (zero_shot_weights(tower, LABELS, templates, words) - ref).abs().max() <= 1e-5


def test_server_gives_the_official_embedding_and_zero_shot_scores(zero_shot_files, tmp_path):
    d, official, clip = zero_shot_files
    x = clouds_near_origin(2, seed=1)
    with torch.no_grad():
        patches, centres, _ = official_group(torch.from_numpy(x), G, S)
        theirs = F.normalize(official(patches, centres), dim=-1).numpy()
        tower_ids = ClipTokenizer(d / "bpe_simple_vocab_16e6.txt.gz")
        cls = F.normalize(official_class_features(clip, tower_ids, LABELS), dim=-1).numpy()
    server = Server(d / "zeroshot.pt", tmp_path / "index", tmp_path / "cache", tmp_path / "server.log",
                    text_tower=f"clip:ViT-B-32-quickgelu:{d / 'tiny-clip.pt'}")
    try:
        for cloud, want in zip(x, theirs):
            body = {"points": cloud.tolist(), "normalise": False, "up_axis": "y"}  # the model's own frame, as given
            r = httpx.post(f"{server.url}/v1/embed", json=body, timeout=60)
            assert r.status_code == 200, r.text
            assert np.abs(np.array(r.json()["embedding"]) - want).max() <= 1e-5
            r = httpx.post(f"{server.url}/v1/zero-shot", json={**body, "labels": LABELS}, timeout=60)
            assert r.status_code == 200, r.text
            got = {s["label"]: s["similarity"] for s in r.json()["scores"]}
            np.testing.assert_allclose([got[l] for l in LABELS], cls @ want, atol=1e-5)
    finally:
        server.stop()


def test_a_mismatched_text_tower_is_refused_with_the_setting_to_use(zero_shot_files, tmp_path):
    from recon_serve.api.state import text_encoder_for
    from recon_serve.backends.base import card_from_checkpoint
    from recon_serve.model.text import TowerMismatch
    from recon_serve.settings import Settings

    d, _, _ = zero_shot_files
    model, ckpt = create_model(d / "zeroshot.pt")
    card = card_from_checkpoint(ckpt, model, d / "zeroshot.pt", "0" * 64)
    with pytest.raises(TowerMismatch, match="RECON_TEXT_TOWER=clip:ViT-B-32"):
        text_encoder_for(card, Settings())
    with pytest.raises(RuntimeError, match="server exited"):  # the real server refuses to start, and says why
        Server(d / "zeroshot.pt", tmp_path / "index", tmp_path / "cache", tmp_path / "server.log")
    assert "not starting" in (log := (tmp_path / "server.log").read_text()) and "RECON_TEXT_TOWER=clip" in log
    assert text_encoder_for(card, Settings(text_tower=f"clip:ViT-B-32-quickgelu:{d / 'tiny-clip.pt'}")).prompts == "recon-official"


def test_finetune_checkpoint_serves_labels_only_and_loads_deterministically(tmp_path):
    torch.manual_seed(1)
    official = OfficialFinetune(d=48, h=2, depth=2, classes=40).eval()
    randomise_norms(official)
    _save_official(official, tmp_path / "modelnet40.pth", bare=True)
    a, ckpt = create_model(tmp_path / "modelnet40.pth", num_heads=2, num_group=G, group_size=S, num_points=N)
    b, _ = create_model(tmp_path / "modelnet40.pth", num_heads=2, num_group=G, group_size=S, num_points=N)
    assert ckpt["class_names"] == list(MODELNET40_NAMES) and "ModelNet40" in ckpt["class_names_source"]
    assert a.text_proj is None and a.embedding_dim == 0
    x = torch.from_numpy(clouds_near_origin())
    with torch.no_grad():
        oa, ob = a(x), b(x)
        patches, centres, _ = official_group(x, G, S)
        theirs = official(patches, centres)
    assert "embedding" not in oa and oa.keys() == ob.keys()
    assert all(torch.equal(oa[k], ob[k]) for k in oa)  # nothing left to a random init
    assert (oa["logits"] - theirs).abs().max() <= 1e-5

    import_official(tmp_path / "modelnet40.pth", tmp_path / "mn40.pt", num_group=G, group_size=S, num_points=N)
    ckpt = torch.load(tmp_path / "mn40.pt", weights_only=False)
    ckpt["config"]["num_heads"] = 2  # 48 wide: the head count cannot be read off the weights
    torch.save(ckpt, tmp_path / "mn40.pt")
    server = Server(tmp_path / "mn40.pt", tmp_path / "index", tmp_path / "cache", tmp_path / "server.log")
    try:
        body = {"points": x[0].tolist(), "normalise": False, "up_axis": "y"}
        r = httpx.post(f"{server.url}/v1/classify", json={**body, "k": 3}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["labels"][0]["label"] == MODELNET40_NAMES[int(theirs[0].argmax())]
        for path, extra in (("/v1/embed", {}), ("/v1/zero-shot", {"labels": ["chair", "lamp"]}),
                            ("/v1/search/shape", {}), ("/v1/shapes", {"id": "a"})):
            r = httpx.post(f"{server.url}{path}", json={**body, **extra}, timeout=60)
            assert r.status_code == 409, (path, r.status_code, r.text)
            assert r.json()["error"] == "embedding_unavailable" and "text_proj" in r.json()["detail"]
        r = httpx.post(f"{server.url}/v1/search/text", json={"text": "a chair"}, timeout=60)
        assert r.status_code == 409
    finally:
        server.stop()


def test_import_reads_the_official_config_and_warns_once_without_it(zero_shot_files, caplog, tmp_path):
    d, _, _ = zero_shot_files
    out = subprocess.run([sys.executable, "-m", "recon_serve.cli", "import-official", str(d / "ckpt-zeroshot.pth"),
                          "--out", str(tmp_path / "cli.pt"), "--config", str(d / "zeroshot.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{G} groups x {S} points, {N} points, up axis y" in out.stdout and "0.25 x text_proj" in out.stdout
    raw = torch.load(d / "ckpt-zeroshot.pth", weights_only=False)
    with caplog.at_level(logging.WARNING, logger="recon_serve.official"):
        first = convert_official(raw)
        convert_official(raw)
    warnings = [r for r in caplog.records if "without its config" in r.message]
    assert len(warnings) == 1 and "--num-group" in warnings[0].message
    assert (first["config"]["num_group"], first["config"]["num_points"]) == (64, 1024)  # the stated assumption


def test_a_15_way_head_gets_the_scanobjectnn_names():
    torch.manual_seed(2)
    sd = {"module." + k: v for k, v in OfficialFinetune(d=48, h=2, depth=1, classes=15).state_dict().items()}
    ckpt = convert_official({"base_model": sd}, num_group=128, num_points=2048, warn=False)
    assert ckpt["class_names"] == list(SCANOBJECTNN_NAMES) and ckpt["teacher"] is None
    given = convert_official({"base_model": sd}, class_names=[f"c{i}" for i in range(15)], warn=False)
    assert given["class_names"][0] == "c0" and given["class_names_source"] == "given"
    with pytest.raises(ValueError, match="3 class names for a 15-way head"):
        convert_official({"base_model": sd}, class_names=["a", "b", "c"], warn=False)


def test_openai_torchscript_archives_load_as_the_same_tower(tmp_path):
    vocab = write_tiny_vocab(tmp_path / "bpe_simple_vocab_16e6.txt.gz")
    torch.manual_seed(3)
    clip = OfficialClipText(vocab, width=128, layers=1, heads=2, embed=16).eval()
    ids = ClipTokenizer(tmp_path / "bpe_simple_vocab_16e6.txt.gz")(["a lamp."])
    torch.jit.save(torch.jit.trace(clip, ids), tmp_path / "ViT-tiny.pt")
    tower = load_clip_text("ViT-tiny", tmp_path / "ViT-tiny.pt")
    with torch.no_grad():
        assert (tower(["a lamp."]) - clip(ids)).abs().max() <= 1e-5
    assert tower.name == "clip:ViT-tiny"


def test_tokenizer_gives_clips_ids_with_the_real_vocabulary():
    try:
        vocab = find_vocab()
    except FileNotFoundError:
        pytest.skip("CLIP's BPE vocabulary is not installed (it ships in the open_clip and clip packages)")
    ids = ClipTokenizer(vocab)(["a photo of a cat"])[0]
    assert ids[:7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407] and not ids[7:].any()


def test_pretrain_layout_converts_to_the_same_model(zero_shot_files):
    """ckpt-last.pth nests the encoder under MAE_encoder and carries the frozen CLIP towers; neither
    may change the model."""
    d, official, _ = zero_shot_files
    sd = {("module." if k.startswith(("text_proj", "img_proj")) else "module.MAE_encoder.") + k: v
          for k, v in official.state_dict().items()}
    sd.update({"module.text_encoder.token_embedding.weight": torch.zeros(3, 4), "module.img_encoder.proj": torch.zeros(2)})
    ckpt = convert_official({"base_model": sd}, config=d / "zeroshot.yaml")
    from recon_serve.model.factory import model_from_checkpoint

    a, b = model_from_checkpoint(ckpt), create_model(d / "zeroshot.pt")[0]
    x = torch.from_numpy(clouds_near_origin(1))
    with torch.no_grad():
        assert torch.equal(a(x)["embedding"], b(x)["embedding"])


def test_the_official_prompts_bound_a_requests_labels_by_their_encoding_work():
    from recon_serve.api.state import TextEncoder
    from recon_serve.api.validation import as_labels
    from recon_serve.errors import BadRequest

    ours, official = TextEncoder(), TextEncoder(prompts="recon-official")
    assert ours.max_labels == 256 and official.max_labels == 2048 // 60 and official.chunk == 1
    as_labels([f"l{i}" for i in range(34)], official.max_labels)
    with pytest.raises(BadRequest, match="at most 34 labels"):
        as_labels([f"l{i}" for i in range(35)], official.max_labels)
