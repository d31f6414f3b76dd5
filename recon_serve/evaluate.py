"""Evaluation on ModelNet10's official test split: accuracy, mean class accuracy, text-prompted accuracy.

Lives in the package (not in training/) because `recon-serve eval` and the server must agree on it.
"""
from __future__ import annotations

import numpy as np
import torch

from recon_serve.model.text import load_teacher, zero_shot_weights
from recon_serve.runtime import autocast_context


@torch.no_grad()
def encode(model, points: np.ndarray, batch_size: int = 128, votes: int = 1, seed: int = 0,
           shape_kinds: tuple[str, ...] = (), bf16_votes: bool | None = None, backend=None) -> dict:
    """Model outputs for normalised clouds [N,P,3]: 'probs' [N,K] (softmax, if a class head),
    'embedding' [N,D], 'shape_embedding' [N,E], and 'shape:<kind>' for each extra pooling in
    `shape_kinds`, all from the plain copy in fp32 (the numbers the exported model gives).
    votes>1 also returns 'vote:<key>': the average over the plain copy and votes-1 copies of the
    paper's voting (random point order, per-axis scale 0.8..1.25). The extra copies run under bf16
    autocast where the CPU does bf16 fast (bf16_votes=None; about 2.5x faster on AMX), so a 10-vote
    ModelNet40 run stays within minutes; voting is a protocol figure, not what the server answers.
    With `backend` (a recon_serve Backend: ONNX Runtime, fp32 or int8) every copy runs there instead,
    as the server would run it; `shape_kinds` then has to be empty."""
    if backend is not None and shape_kinds:
        raise ValueError("extra shape poolings (shape_kinds) need the torch model, not a backend")
    model.eval()
    device = next(model.parameters()).device  # a model on the GPU (a lent machine's training run)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list] = {}

    def run(xv) -> dict:
        xv = xv.to(device)
        if backend is not None:
            res = {k: torch.from_numpy(v) for k, v in backend.infer(xv.cpu().numpy()).items()}
            if "logits" in res:
                res["probs"] = res.pop("logits").softmax(-1)
            return {k: t.float() for k, t in res.items() if k in ("shape_embedding", "embedding", "probs")}
        patches, centres = model.group(xv)
        queries, tokens = model.encoder(patches, centres)
        res = {"shape_embedding": model.shape_embedding(queries, tokens)}
        embedding = model.text_embedding(queries)
        if embedding is not None:
            res["embedding"] = embedding
        res.update({f"shape:{k}": model.shape_embedding(queries, tokens, k) for k in shape_kinds})
        if model.cls_head is not None:
            res["probs"] = model.head_logits(queries, tokens).float().softmax(-1)
        return {k: t.float().cpu() for k, t in res.items()}

    def keep(key: str, t: torch.Tensor) -> None:
        out.setdefault(key, []).append(t if key.endswith("probs") else torch.nn.functional.normalize(t, dim=-1))

    for i in range(0, len(points), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(points[i : i + batch_size], dtype=np.float32))
        plain = run(x)
        for k, t in plain.items():
            keep(k, t)
        if votes <= 1:
            continue
        acc = dict(plain)
        for _ in range(votes - 1):
            order = torch.rand(x.shape[:2], generator=gen).argsort(1)
            xv = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, 3))
            xv = xv * torch.empty(len(x), 1, 3).uniform_(0.8, 1.25, generator=gen)
            with autocast_context(device, enabled=bf16_votes):
                for k, t in run(xv).items():
                    acc[k] = acc[k] + t
        for k, t in acc.items():
            keep("vote:" + k, t / votes)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def predict(model, points: np.ndarray, batch_size: int = 128, votes: int = 1, seed: int = 0):
    """(class probabilities [N,K] or None, text embeddings [N,D]) for normalised clouds [N,P,3];
    with votes>1, the voted ones."""
    r = encode(model, points, batch_size, votes, seed)
    pre = "vote:" if votes > 1 else ""
    return r.get(pre + "probs"), r.get(pre + "embedding")


def accuracy_report(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(overall accuracy, mean class accuracy) in percent."""
    oa = float((pred == labels).mean() * 100)
    per_class = [float((pred[labels == c] == c).mean()) for c in range(num_classes) if (labels == c).any()]
    return oa, float(np.mean(per_class) * 100)


def evaluate(model, points, labels, class_names, teacher=None, votes: int = 1) -> dict:
    probs, emb = predict(model, points, votes=votes)
    result = {"n": int(len(labels)), "votes": votes}
    if probs is not None:
        result["oa"], result["macc"] = accuracy_report(probs.argmax(1), labels, len(class_names))
    if emb is not None:
        w = zero_shot_weights(teacher or load_teacher(), class_names).numpy()
        zs = (emb @ w.T).argmax(1)
        result["zero_shot_oa"], result["zero_shot_macc"] = accuracy_report(zs, labels, len(class_names))
    return result


def part_ious(pred: np.ndarray, gt: np.ndarray, parts) -> list[float]:
    """IoU of each of a shape's category parts; a part absent from both prediction and truth counts 1
    (the ShapeNetPart convention)."""
    ious = []
    for p in parts:
        union = np.logical_or(pred == p, gt == p).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(pred == p, gt == p).sum() / union))
    return ious


def shape_iou(pred: np.ndarray, gt: np.ndarray, parts) -> float:
    """Mean IoU over a shape's category parts."""
    return float(np.mean(part_ious(pred, gt, parts)))


def part_miou(preds, gts, categories, category_parts: dict) -> dict:
    """Instance mIoU (mean over shapes) and class mIoU (mean over categories of their shapes' mean),
    in percent, plus each part's mean IoU over its category's shapes (`per_part`, keyed by part id).
    `category_parts[c]` lists the part ids of category c."""
    by_cat: dict = {}
    by_part: dict = {}
    per_shape = []
    for p, g, c in zip(preds, gts, categories):
        ious = part_ious(p, g, category_parts[c])
        per_shape.append(float(np.mean(ious)))
        by_cat.setdefault(c, []).append(per_shape[-1])
        for part, iou in zip(category_parts[c], ious):
            by_part.setdefault(part, []).append(iou)
    return {"instance_miou": float(np.mean(per_shape) * 100),
            "class_miou": float(np.mean([np.mean(v) for v in by_cat.values()]) * 100),
            "per_category": {str(c): float(np.mean(v) * 100) for c, v in by_cat.items()},
            "per_part": {int(k): float(np.mean(v) * 100) for k, v in by_part.items()}}


def restrict_to_category(part_logits: torch.Tensor, category_parts: dict, category=None):
    """Per-point labels [N] from logits [N,P] using only one category's parts.

    With `category` given (the ShapeNetPart protocol) its parts are used; otherwise the category
    whose parts hold the most probability mass over the shape is chosen (what a server must do).
    Returns (labels, category)."""
    logp = part_logits.float().log_softmax(-1)
    if category is None:
        mass = {c: torch.logsumexp(logp[:, p], dim=-1).sum().item() for c, p in category_parts.items()}
        category = max(mass, key=mass.get)
    parts = torch.as_tensor(category_parts[category])
    return parts[logp[:, parts].argmax(-1)].numpy(), category


@torch.no_grad()
def evaluate_seg(model, dataset, batch_size: int = 16, up_axis: str = "y") -> dict:
    """Part mIoU on a procedural (or any ShapeNetPart-like) data set: instance and class mIoU with the
    true category (protocol), and with the category inferred from the part logits. The data's
    `up_axis` (procedural shapes: y) is rotated onto the model's frame first."""
    from recon_serve.geometry.normalise import normalise
    from recon_serve.geometry.preprocess import up_rotation

    to_model = up_rotation(up_axis)
    model.eval()
    cats = [dataset.categories[i] for i in dataset.category_ids]
    preds, preds_free, free_cats = [], [], []
    for i in range(0, len(dataset.points), batch_size):
        x = torch.from_numpy(np.stack([normalise(p @ to_model.T) for p in dataset.points[i : i + batch_size]]))
        logits = model(x)["part_logits"]
        for j, lg in enumerate(logits):
            preds.append(restrict_to_category(lg, dataset.category_parts, cats[i + j])[0])
            lab, c = restrict_to_category(lg, dataset.category_parts)
            preds_free.append(lab)
            free_cats.append(c)
    gts = list(dataset.labels)
    res = part_miou(preds, gts, cats, dataset.category_parts)
    res["per_part"] = {dataset.part_names[k]: v for k, v in res["per_part"].items()}
    free = part_miou(preds_free, gts, cats, dataset.category_parts)
    res.update(n=len(gts), points=int(dataset.points.shape[1]), inferred_category_instance_miou=free["instance_miou"],
               inferred_category_class_miou=free["class_miou"],
               category_accuracy=float(np.mean([a == b for a, b in zip(free_cats, cats)]) * 100))
    return res
