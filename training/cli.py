"""`recon-train`: pretrain, fine-tune and build the shipped default model.

    recon-train pretrain --config tiny --run runs/tiny --epochs 300
    recon-train finetune --init runs/tiny/pretrain.pt --run runs/tiny --epochs 300
    recon-train default --run runs/default      # the shipped model's whole recipe, resumable
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

from recon_serve.data.modelnet import load_modelnet10
from recon_serve.evaluate import evaluate
from recon_serve.model.factory import create_model
from training.train import Recipe, train, write_stage_checkpoint

# The shipped default: what `recon-train default` runs (see models/default/MODEL_CARD.md).
DEFAULT_RECIPE = {
    "config": "tiny",
    "pretrain": Recipe(stage="pretrain", epochs=5, lr=5e-4, warmup_epochs=1),
    "finetune": Recipe(stage="finetune", epochs=40, lr=5e-4, warmup_epochs=2, eval_every=4),
}


def _logger(run_dir: Path):
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.FileHandler(run_dir / "train.log"), logging.StreamHandler(sys.stderr)])
    return logging.getLogger("recon-train").info


def run_stage(stage: str, recipe: Recipe, run: Path, init, config: str, data, log):
    """Train one stage from `init` (a checkpoint) or a fresh `config`; writes <run>/<stage>.pt."""
    out = run / f"{stage}.pt"
    if out.exists():
        log(f"[{stage}] {out} exists, skipping")
        return out
    train_pts, train_y, classes, _ = load_modelnet10("train", data)
    test = load_modelnet10("test", data)
    model, ckpt = create_model(init or config, num_classes=len(classes))
    if model.cls_head is None or model.cfg.num_classes != len(classes):
        model.set_num_classes(len(classes))
    history = (ckpt or {}).get("recipe", {}).get("stages", [])
    ema = train(model.train(), (train_pts, train_y), recipe, run, classes, test_data=test[:2], log=log)
    metrics = None
    if stage == "finetune":
        t = time.time()
        metrics = evaluate(ema, test[0], test[1], classes)
        metrics["eval_seconds"] = round(time.time() - t, 1)
        log("test: " + json.dumps(metrics))
    write_stage_checkpoint(out, ema, classes, recipe, history, metrics)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="recon-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("pretrain", "finetune"):
        p = sub.add_parser(name)
        p.add_argument("--config", default="tiny", help="config name for a fresh model")
        p.add_argument("--init", help="start from this checkpoint")
        p.add_argument("--run", required=True, type=Path, help="run directory (state, logs, output)")
        p.add_argument("--data", help="data root (default $RECON_DATA or ../shared/data)")
        for f in Recipe.__dataclass_fields__.values():
            if f.name != "stage":
                p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None)
    d = sub.add_parser("default", help="run the shipped default's full recipe")
    d.add_argument("--run", type=Path, default=Path("runs/default"))
    d.add_argument("--data")
    args = ap.parse_args(argv)
    log = _logger(args.run)

    if args.cmd == "default":
        pre = run_stage("pretrain", DEFAULT_RECIPE["pretrain"], args.run, None, DEFAULT_RECIPE["config"], args.data, log)
        run_stage("finetune", DEFAULT_RECIPE["finetune"], args.run, pre, DEFAULT_RECIPE["config"], args.data, log)
        return
    overrides = {k: getattr(args, k) for k in Recipe.__dataclass_fields__ if k != "stage" and getattr(args, k) is not None}
    recipe = Recipe(stage=args.cmd, **overrides)
    log(f"[{args.cmd}] recipe {asdict(recipe)}")
    run_stage(args.cmd, recipe, args.run, args.init, args.config, args.data, log)


if __name__ == "__main__":
    main()
