import json

import numpy as np
import torch

from recon_serve.model.factory import create_model
from recon_serve.model.text import load_teacher
from training.train import CaptionBank, Recipe, part_weights, train

CLASSES = ["sphere", "cube"]


def _toy(n=16, p=256, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n // 2, p, 3)); s /= np.linalg.norm(s, axis=-1, keepdims=True)
    c = rng.uniform(-0.5, 0.5, size=(n // 2, p, 3))
    face = rng.integers(0, 3, size=(n // 2, p))
    np.put_along_axis(c, face[..., None], 0.5, axis=-1)
    return np.concatenate([s, c]).astype(np.float32), np.array([0] * (n // 2) + [1] * (n // 2))


def test_both_stages_run_log_and_resume(tmp_path):
    data = _toy()
    model, _ = create_model("micro", num_classes=2)
    teacher = load_teacher()
    for stage in ("pretrain", "finetune"):
        r = Recipe(stage=stage, epochs=1, batch_size=8, warmup_epochs=0)
        train(model, data, r, tmp_path, CLASSES, teacher=teacher, progress=False, log=lambda m: None)
        lines = (tmp_path / f"{stage}.log.jsonl").read_text().splitlines()
        assert len(lines) == 1 and all(np.isfinite(v) for k, v in json.loads(lines[0]).items() if k != "epoch")
    # resume: asking for 2 epochs continues from the saved state and runs exactly one more
    logs = []
    model2, _ = create_model("micro", num_classes=2)
    train(model2, data, Recipe(stage="finetune", epochs=2, batch_size=8, warmup_epochs=0), tmp_path, CLASSES,
          teacher=teacher, progress=False, log=logs.append)
    assert any("resuming at epoch 1/2" in m for m in logs)
    assert [json.loads(l)["epoch"] for l in (tmp_path / "finetune.log.jsonl").read_text().splitlines()] == [1, 2]
    state = torch.load(tmp_path / "finetune.state.pt", weights_only=False)
    assert state["epoch"] == 2


def test_procedural_clouds_extend_the_class_names_by_category():
    from recon_serve.data.procedural import CATEGORIES
    from training.cli import procedural_clouds

    pts, labels, names = procedural_clouds(1, ["chair", "bookcase"], points=64)
    assert names[:2] == ["chair", "bookcase"] and len(names) == 1 + len(CATEGORIES)  # 'chair' is shared
    assert pts.shape == (len(CATEGORIES), 64, 3) and np.allclose(np.linalg.norm(pts, axis=-1).max(1), 1, atol=1e-5)
    assert sorted(set(labels.tolist())) == [0] + list(range(2, len(names)))


def test_part_weights_favour_rare_parts_and_keep_the_average_point_at_one():
    labels = torch.tensor([[0] * 90 + [1] * 9 + [2] * 1])  # part 3 never appears
    assert part_weights(labels, 4, 0.0) is None
    w = part_weights(labels, 4, 0.5)
    assert w[2] > w[1] > w[0] > 0 and w[3] == 0
    assert torch.isclose(w[labels].mean(), torch.tensor(1.0))
    assert torch.isclose(w[2] / w[0], torch.tensor(90.0 ** 0.5), rtol=1e-4)


def test_contrastive_negatives_are_the_other_captions_in_the_batch(teacher):
    """One random caption per distinct class of the batch; the softmax runs over those captions only."""
    from recon_serve.model.text import TEMPLATES

    bank = CaptionBank(["chair", ["airplane", "aeroplane"], "lamp", "teapot"], teacher)
    T = len(TEMPLATES)
    assert bank.counts.tolist() == [T, 2 * T, T, T]
    y = torch.tensor([3, 1, 1, 3, 1])
    torch.manual_seed(0)
    caps, ids = bank.batch(y)
    assert caps.shape[0] == 2 and ids.tolist() == [1, 0, 0, 1, 0]
    for cls, cap in zip((1, 3), caps):
        own = bank.features[bank.starts[cls]: bank.starts[cls] + bank.counts[cls]]
        assert any(torch.equal(cap, row) for row in own)
    model, _ = create_model("micro")
    queries = torch.randn(5, 3, model.cfg.trans_dim)
    proj = torch.nn.functional.normalize(model.text_proj(queries[:, 2]), dim=-1)
    logits = model.logit_scale.exp() * proj @ torch.nn.functional.normalize(caps, dim=-1).T  # [5 samples, 2 captions]
    want = torch.nn.functional.cross_entropy(logits, ids)
    assert torch.allclose(model.contrastive_loss(queries, caps, ids)["contrast"], want)


def _average_on_rank(rank: int, port: int, out) -> None:
    import torch.distributed as dist

    from training.train import _average_gradients

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    used, unused = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    used.grad = torch.full((3,), float(rank + 1))  # rank 0: 1, rank 1: 2
    if rank == 1:
        unused.grad = torch.full((2,), 4.0)  # only rank 1's batch used it
    _average_gradients([used, unused], 2)
    out.put((rank, used.grad.tolist(), unused.grad.tolist()))
    dist.destroy_process_group()


def test_several_processes_average_their_gradients():
    """Multi-GPU training (torchrun) averages gradients across ranks, unused parameters included."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_average_on_rank, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    assert results == [(0, [1.5] * 3, [2.0] * 2), (1, [1.5] * 3, [2.0] * 2)]


def test_class_balanced_order_draws_rare_classes_more_often():
    from training.train import epoch_order

    labels = torch.tensor([0] * 90 + [1] * 10)
    torch.manual_seed(0)
    assert sorted(epoch_order(labels).tolist()) == list(range(100))  # balance 0: a shuffle
    draws = torch.cat([epoch_order(labels, 1.0) for _ in range(50)])
    rare = (labels[draws] == 1).float().mean().item()
    assert 0.45 < rare < 0.55  # b=1: both classes alike, against 10 % in a shuffle
    half = (labels[torch.cat([epoch_order(labels, 0.5) for _ in range(50)])] == 1).float().mean().item()
    assert 0.2 < half < 0.3  # b=0.5: shares go as sqrt(n): 10^0.5 / (90^0.5 + 10^0.5) = 0.25
