"""`recon-serve`: the command line of the package.

    recon-serve eval [--checkpoint PATH] [--data DIR] [--votes N] --json FILE
    recon-serve info [--checkpoint PATH]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _eval(args) -> int:
    from recon_serve.data.modelnet import load_modelnet10
    from recon_serve.evaluate import evaluate
    from recon_serve.model.factory import DEFAULT_CHECKPOINT, create_model

    ckpt_path = args.checkpoint or DEFAULT_CHECKPOINT
    t0 = time.time()
    model, ckpt = create_model(ckpt_path)
    points, labels, classes, _ = load_modelnet10("test", args.data)
    names = ckpt.get("class_names") if ckpt else None
    if names and list(names) != classes:
        print(f"error: checkpoint classes {names} differ from the data's {classes}", file=sys.stderr)
        return 2
    if model.cls_head is None:
        print("note: checkpoint has no classification head; reporting text-prompted accuracy only", file=sys.stderr)
    result = evaluate(model, points, labels, classes, votes=args.votes)
    result.update(checkpoint=str(ckpt_path), split="modelnet10/test", seconds=round(time.time() - t0, 1))
    rows = [("overall accuracy (OA)", result.get("oa")), ("mean class accuracy", result.get("macc")),
            ("text-prompted OA", result["zero_shot_oa"]), ("text-prompted mean class acc", result["zero_shot_macc"])]
    print(f"ModelNet10 test split, {result['n']} shapes, votes={args.votes} ({'no voting' if args.votes == 1 else 'voting'})")
    for name, v in rows:
        if v is not None:
            print(f"  {name:<32} {v:6.2f} %")
    print(f"  took {result['seconds']} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def _info(args) -> int:
    from recon_serve.model.factory import DEFAULT_CHECKPOINT, create_model

    model, ckpt = create_model(args.checkpoint or DEFAULT_CHECKPOINT)
    info = {k: ckpt.get(k) for k in ("config", "class_names", "normalisation", "teacher", "recipe", "metrics")}
    info["parameters"] = sum(p.numel() for p in model.parameters())
    print(json.dumps(info, indent=2, default=str))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="recon-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="accuracy on the ModelNet10 test split")
    e.add_argument("--checkpoint", help="checkpoint (default: the shipped model)")
    e.add_argument("--data", help="data root (default $RECON_DATA or ../shared/data)")
    e.add_argument("--votes", type=int, default=1, help="1 = no voting (default)")
    e.add_argument("--json", help="write the figures here")
    e.set_defaults(fn=_eval)
    i = sub.add_parser("info", help="print a checkpoint's model card fields")
    i.add_argument("--checkpoint")
    i.set_defaults(fn=_info)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
