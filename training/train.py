"""Pretraining (ReCon objective) and fine-tuning (classification) with one resumable loop.

Single process:   python -m training.cli pretrain --config tiny --run runs/tiny
Several GPUs:     torchrun --nproc_per_node 4 -m training.cli finetune --init runs/tiny/pretrain.pt ...
Each epoch writes <run>/<stage>.state.pt (model, EMA, optimiser, RNG) atomically, so a killed run
resumes where it stopped; losses go to <run>/<stage>.log.jsonl, one line per epoch.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from recon_serve.evaluate import evaluate
from recon_serve.model.checkpoint import save_checkpoint
from recon_serve.model.text import TEMPLATES, class_text, load_teacher
from recon_serve.runtime import autocast_context, default_device
from training.augment import point_dropout, rotate_about_up, scale_and_translate, shuffle_points


@dataclass
class Recipe:
    stage: str = "finetune"  # pretrain | finetune | seg
    epochs: int = 40
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    contrast_weight: float = 1.0  # text contrast kept during fine-tuning so the embedding stays text-aligned
    ema: float = 0.999
    seed: int = 0
    eval_every: int = 0  # 0: evaluate only at the end
    freeze_encoder: bool = False  # train without changing model.encoder, so classification answers do not move
    seg_encoder: bool = False  # seg: fine-tune a copy of the encoder for the seg head (with freeze_encoder)
    seg_local_k: int = 0  # seg: give the head each point's k-nearest-point descriptor (0: keep the checkpoint's)
    part_balance: float = 0.0  # seg: weight a part's points by (its share of points)^-part_balance; mIoU counts parts equally
    n_points: int = 1024  # points per training cloud: a fresh random subset each epoch of clouds that have more
    rotate: bool = False  # random rotation about the up axis (z) per cloud
    point_dropout: float = 0.0  # drop up to this fraction of each cloud's points (PointNet++'s random dropout)
    save_state: bool = True  # write <run>/<stage>.state.pt each epoch (resumable); off on a lent GPU run
    class_balance: float = 0.0  # 0: each epoch a shuffle; b > 0: draws weighted count^-b (rare classes more often)


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


class CaptionBank:
    """Teacher features of every caption of every class: each of a class's names (a str, or a list
    of synonyms) in each prompt template. The raw teacher features are the distillation targets."""

    def __init__(self, class_names, teacher):
        names = [[n] if isinstance(n, str) else list(n) for n in class_names]
        prompts = [t.format(class_text(n)) for ns in names for n in ns for t in TEMPLATES]
        self.features = teacher(prompts) if prompts else torch.empty(0, 0)
        counts = torch.tensor([len(ns) * len(TEMPLATES) for ns in names])
        self.counts, self.starts = counts, torch.cumsum(counts, 0) - counts

    def to(self, device) -> "CaptionBank":
        self.features, self.counts, self.starts = (t.to(device) for t in (self.features, self.counts, self.starts))
        return self

    def batch(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(captions [T,D], ids [B]): one random caption per distinct class in the batch, so the
        contrastive negatives are the other captions in the batch, never a fixed label list."""
        distinct, ids = torch.unique(labels, return_inverse=True)
        pick = self.starts[distinct] + (torch.rand(len(distinct), device=labels.device) * self.counts[distinct]).long()
        return self.features[pick], ids


def sample_points(points, idx, n: int) -> torch.Tensor:
    """[B, n, 3]: for each chosen cloud a random n of its points (all of them, shuffled, when it has n)."""
    out = []
    for i in idx.tolist():
        p = points[i]
        sel = torch.randperm(len(p))[:n] if len(p) >= n else torch.randint(len(p), (n,))
        out.append(torch.as_tensor(p[sel.numpy()]))
    return torch.stack(out)


def epoch_order(labels: torch.Tensor, balance: float = 0.0) -> torch.Tensor:
    """One epoch's sample order: a shuffle, or with balance b > 0 as many draws with replacement, a
    shape of a class with n shapes weighted n^-b (each class's share of draws goes as n^(1-b): b=1
    draws every class alike, b=0.5 halves the gap on a log scale). The merged data runs from 4 to
    hundreds of shapes per class."""
    if not balance:
        return torch.randperm(len(labels))
    labels = labels.flatten().cpu()
    counts = torch.bincount(labels).double()
    return torch.multinomial(counts[labels] ** -balance, len(labels), replacement=True)


def _lr_at(step: float, total: float, warmup: float, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1.0, total - warmup)))


def _atomic_save(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(model, data, recipe: Recipe, run_dir, class_names, test_data=None, teacher=None, log=print, progress=True):
    """Run (or resume) one stage; returns the EMA model. `data` is (points [N,P,3], labels [N])."""
    rank, world = _dist_info()
    device = default_device()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / f"{recipe.stage}.state.pt"
    log_path = run_dir / f"{recipe.stage}.log.jsonl"
    torch.manual_seed(recipe.seed + rank)
    random.seed(recipe.seed + rank)
    np.random.seed(recipe.seed + rank)

    teacher = teacher or load_teacher()
    bank = CaptionBank(class_names, teacher).to(device)
    points, labels = data[0], torch.as_tensor(data[1])
    if isinstance(points, np.ndarray):
        points = torch.from_numpy(points)
    # one tensor of n-point clouds (it may already be on the device): batches are slices of it
    uniform = isinstance(points, torch.Tensor) and points.shape[1] == recipe.n_points
    part_weight = part_weights(labels, model.cfg.num_parts, recipe.part_balance) if recipe.stage == "seg" else None
    part_weight = None if part_weight is None else part_weight.to(device)
    model.to(device)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    if recipe.freeze_encoder:
        model.encoder.requires_grad_(False)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() <= 1 or "token" in n or "pos" in n.split(".")[-1] else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    trainable = [p for p in model.parameters() if p.requires_grad]

    ema_pairs = list(zip(ema.state_dict().values(), model.state_dict().values()))
    start_epoch = 0
    if state_path.exists():
        st = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        torch.set_rng_state(st["rng"])
        start_epoch = st["epoch"]
        log(f"[{recipe.stage}] resuming at epoch {start_epoch}/{recipe.epochs} from {state_path}")

    steps_per_epoch = len(points) // (recipe.batch_size * world)
    total = steps_per_epoch * recipe.epochs
    for epoch in range(start_epoch, recipe.epochs):
        model.train()
        if recipe.freeze_encoder:
            model.encoder.eval()  # also keeps its BatchNorm statistics fixed
        order = epoch_order(labels if recipe.stage != "seg" else labels[:, 0], recipe.class_balance)[rank::world]
        sums: dict[str, float] = {}
        t0 = time.time()
        bar = tqdm(range(steps_per_epoch), desc=f"{recipe.stage} {epoch + 1}/{recipe.epochs}", disable=not progress or rank, leave=False)
        for it in bar:
            idx = order[it * recipe.batch_size : (it + 1) * recipe.batch_size]
            if recipe.stage == "seg" or uniform:  # seg labels are per point: keep the order
                x = points[idx].to(device)
                if recipe.stage != "seg":
                    x = shuffle_points(x)
            else:
                x = sample_points(points, idx, recipe.n_points).to(device)
            if recipe.rotate:
                x = rotate_about_up(x)
            x = scale_and_translate(x)
            if recipe.point_dropout:
                x = point_dropout(x, recipe.point_dropout)
            y = labels[idx].to(device)
            cands = bank.batch(y) if recipe.stage != "seg" else None
            lr = _lr_at(epoch * steps_per_epoch + it, total, recipe.warmup_epochs * steps_per_epoch, recipe.lr)
            for g in opt.param_groups:
                g["lr"] = lr
            with autocast_context(device):
                losses = _stage_losses(model, recipe, x, y, cands, part_weight)
            loss = sum(v.float() for v in losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch} step {it}: {losses}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:  # the losses call model methods, not forward(), so gradients are averaged here
                _average_gradients(trainable, world)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            with torch.no_grad():
                d = min(recipe.ema, (1 + epoch * steps_per_epoch + it) / (10 + epoch * steps_per_epoch + it))
                for pe, pm in ema_pairs:
                    if pe.dtype.is_floating_point:
                        pe.lerp_(pm, 1 - d)  # exact no-op where nothing is trained (frozen parts)
                    else:
                        pe.copy_(pm)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
        rec = {"epoch": epoch + 1, "lr": lr, "seconds": round(time.time() - t0, 1), **{k: v / steps_per_epoch for k, v in sums.items()}}
        if test_data is not None and recipe.eval_every and (epoch + 1) % recipe.eval_every == 0 and rank == 0:
            names = [n if isinstance(n, str) else n[0] for n in class_names]
            rec["eval_ema"] = evaluate(ema, test_data[0], test_data[1], names, teacher)
        if rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            log(json.dumps(rec))
        if rank == 0 and recipe.save_state:
            _atomic_save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                          "rng": torch.get_rng_state(), "epoch": epoch + 1, "recipe": asdict(recipe)}, state_path)
    return ema


def _average_gradients(params, world: int) -> None:
    """All-reduce every trainable parameter's gradient (zeros where this rank's batch did not use it,
    so every rank reduces the same tensors in the same order)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= world


def part_weights(labels: torch.Tensor, num_parts: int, balance: float) -> torch.Tensor | None:
    """Per-part loss weights share^-balance (share: the part's fraction of all labelled points),
    scaled so the average point still weighs 1; None when balance is 0 (plain cross-entropy)."""
    if not balance:
        return None
    counts = torch.bincount(labels.flatten(), minlength=num_parts).double()
    w = torch.where(counts > 0, (counts / counts.sum()).clamp_min(1e-12) ** -balance, torch.zeros_like(counts))
    return (w * counts.sum() / (w * counts).sum()).float()


def _stage_losses(model, recipe: Recipe, x, y, cands, part_weight=None) -> dict:
    """The objective of each stage. cands: (captions of the batch's classes, each sample's caption id)."""
    if recipe.stage == "pretrain":
        return model.pretrain_losses(x, *cands)
    if recipe.stage == "seg":
        logits = model.part_logits(x, train_encoder=recipe.seg_encoder or not recipe.freeze_encoder)
        return {"seg_ce": F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), weight=part_weight,
                                          label_smoothing=recipe.label_smoothing)}
    queries, tokens = model.features(x, stop_grad=False)
    losses = {"ce": F.cross_entropy(model.head_logits(queries, tokens).float(), y, label_smoothing=recipe.label_smoothing)}
    losses["contrast"] = recipe.contrast_weight * model.contrastive_loss(queries.float(), *cands)["contrast"]
    return losses


def write_stage_checkpoint(path, model, class_names, recipe: Recipe, history: list, metrics=None, extra=None):
    save_checkpoint(path, model, class_names=class_names, teacher=load_teacher().name,
                    recipe={"stages": history + [asdict(recipe)]}, metrics=metrics, extra=extra)
