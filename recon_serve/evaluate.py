"""Evaluation on ModelNet10's official test split: accuracy, mean class accuracy, text-prompted accuracy.

Lives in the package (not in training/) because `recon-serve eval` and the server must agree on it.
"""
from __future__ import annotations

import numpy as np
import torch

from recon_serve.model.text import load_teacher, zero_shot_weights


@torch.no_grad()
def predict(model, points: np.ndarray, batch_size: int = 32, votes: int = 1, seed: int = 0):
    """(logits [N,K] or None, embeddings [N,D]) for normalised clouds [N,P,3]. votes>1 averages
    scale-and-translate augmented copies (the paper's voting); 1 means no voting."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    logits, embeds = [], []
    for i in range(0, len(points), batch_size):
        x = torch.from_numpy(points[i : i + batch_size])
        lsum, esum = 0, 0
        for v in range(votes):
            xv = x if v == 0 else x * torch.empty(len(x), 1, 3).uniform_(0.85, 1.15, generator=gen)
            out = model(xv)  # fp32: the same numbers the exported model gives
            esum = esum + out["embedding"].float()
            if "logits" in out:
                lsum = lsum + out["logits"].float().softmax(-1)
        embeds.append(torch.nn.functional.normalize(esum, dim=-1))
        if not isinstance(lsum, int):
            logits.append(lsum / votes)
    return (torch.cat(logits).numpy() if logits else None), torch.cat(embeds).numpy()


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
    teacher = teacher or load_teacher()
    w = zero_shot_weights(teacher, class_names).numpy()
    zs = (emb @ w.T).argmax(1)
    result["zero_shot_oa"], result["zero_shot_macc"] = accuracy_report(zs, labels, len(class_names))
    return result


def shape_iou(pred: np.ndarray, gt: np.ndarray, parts) -> float:
    """Mean IoU over a shape's category parts; a part absent from both prediction and truth counts 1
    (the ShapeNetPart convention)."""
    ious = []
    for p in parts:
        union = np.logical_or(pred == p, gt == p).sum()
        ious.append(1.0 if union == 0 else np.logical_and(pred == p, gt == p).sum() / union)
    return float(np.mean(ious))


def part_miou(preds, gts, categories, category_parts: dict) -> dict:
    """Instance mIoU (mean over shapes) and class mIoU (mean over categories of their shapes' mean),
    in percent. `category_parts[c]` lists the part ids of category c."""
    per_shape = [shape_iou(p, g, category_parts[c]) for p, g, c in zip(preds, gts, categories)]
    by_cat: dict = {}
    for c, v in zip(categories, per_shape):
        by_cat.setdefault(c, []).append(v)
    return {"instance_miou": float(np.mean(per_shape) * 100),
            "class_miou": float(np.mean([np.mean(v) for v in by_cat.values()]) * 100),
            "per_category": {str(c): float(np.mean(v) * 100) for c, v in by_cat.items()}}
