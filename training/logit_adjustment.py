"""Would logit adjustment help a class-balanced model? A sweep on the validation split only.

A model fine-tuned with class-balanced sampling (`--class-balance B`) under-weights the common
classes; adding tau * log(n_c) (n_c: the class's training shapes) to its logits puts the training
prior back. This scores validation OA and mean class accuracy for a few tau, for each checkpoint
given, so the choice is made before any test split is looked at.

Run:  python -m training.logit_adjustment CHECKPOINT [CHECKPOINT ...] [--taus 0,0.1,0.2,0.5,1]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from recon_serve.geometry.preprocess import prepare
from recon_serve.model.factory import create_model
from training.cli import DEFAULT_RECIPE
from training.sources import build_splits


def validation_logits(checkpoint: Path, points: np.ndarray, batch: int = 64) -> tuple[np.ndarray, list[str]]:
    model, ckpt = create_model(checkpoint)
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(points), batch):
            out.append(model(torch.from_numpy(points[i:i + batch]))["logits"].numpy())
    return np.concatenate(out), list(ckpt["class_names"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--taus", default="0,0.1,0.2,0.3,0.5,1")
    ap.add_argument("--data", default=None, help="the shared data root (default: ../shared/data or $RECON_DATA)")
    args = ap.parse_args(argv)
    taus = [float(t) for t in args.taus.split(",")]
    vocab, splits, _ = build_splits(args.data, **DEFAULT_RECIPE["data"])  # the splits training used
    val = splits["val"]
    points = np.stack([prepare(p, 1024).points for p in val.points])  # the models' 1,024 points
    train_names = [vocab.classes[c] for c in splits["train"].labels]
    for checkpoint in args.checkpoints:
        logits, head = validation_logits(checkpoint, points)
        index = {n: i for i, n in enumerate(head)}
        counts = np.ones(len(head))  # +1: a class absent from training gets log 1 = 0
        for n in train_names:
            if n in index:
                counts[index[n]] += 1
        y = np.array([index[vocab.classes[c]] for c in val.labels])
        for tau in taus:
            pred = (logits + tau * np.log(counts)).argmax(1)
            oa = float((pred == y).mean()) * 100
            macc = float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)])) * 100
            print(f"{checkpoint}  tau {tau:4.2f}  validation OA {oa:5.2f} %  mean class {macc:5.2f} %")


if __name__ == "__main__":
    main()
