"""`recon-train`: pretrain, fine-tune and build the shipped default model.

    recon-train pretrain --config tiny --run runs/tiny --epochs 300
    recon-train finetune --init runs/tiny/pretrain.pt --run runs/tiny --epochs 300
    recon-train default --run runs/default      # the shipped model's whole recipe, resumable
    recon-train finetune-seg --init runs/tiny/finetune.pt --run runs/tiny   # part segmentation head
    recon-train generate --out data/procedural --per-category 64   # part-labelled synthetic shapes
    recon-train splits --out runs/splits    # the recipe's val / class-disjoint / test sets as .npz
    recon-train gpu-pack --out runs/gpu_pack   # fine-tuning on a lent GPU machine: see training/gpu.py
    recon-train gpu-unpack --from DIR --run runs/gpu --pack runs/gpu_pack
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from recon_serve.data.modelnet import load_modelnet10
from recon_serve.evaluate import evaluate
from recon_serve.model.checkpoint import slim_checkpoint
from recon_serve.model.factory import DEFAULT_CHECKPOINT, create_model
import numpy as np

from training.train import Recipe, train, write_stage_checkpoint

# The shipped default: what `recon-train default` runs (see models/default/MODEL_CARD.md). Every
# labelled source of the data root in one vocabulary (training/sources.py), class-disjoint and
# validation shapes held out; the test split is only evaluated for the model card.
DEFAULT_RECIPE = {
    "config": "tiny",
    "data": {"seed": 0, "val_fraction": 0.1, "disjoint_fraction": 0.15, "procedural": 24},
    # ReCon objective on every training shape (real and procedural), random up-axis rotation
    "pretrain": Recipe(stage="pretrain", epochs=4, lr=5e-4, warmup_epochs=1, rotate=True),
    # classification over the merged vocabulary (real shapes), text contrast kept; val OA logged per epoch
    "finetune": Recipe(stage="finetune", epochs=8, lr=5e-4, warmup_epochs=1, point_dropout=0.5, eval_every=1),
    # part segmentation head on the frozen encoder, rare parts weighted up (mIoU counts a chimney like a wall)
    "seg": Recipe(stage="seg", epochs=6, lr=1e-3, warmup_epochs=1, label_smoothing=0.0, freeze_encoder=True,
                  part_balance=0.5),
    "seg_data": {"per_category": 160, "points": 2048, "seed": 0},
    # `default --refine`: more fine-tuning from an earlier run's model (a warm restart of the cosine
    # schedule), then the seg head and calibration again; how the shipped default was extended
    "refine": Recipe(stage="finetune", epochs=8, lr=3e-4, warmup_epochs=1, point_dropout=0.5, eval_every=2),
    # its seg stage: the earlier part head adapted to the refined encoder (fewer epochs than from scratch)
    "refine_seg": Recipe(stage="seg", epochs=3, lr=5e-4, warmup_epochs=0, label_smoothing=0.0, freeze_encoder=True,
                         part_balance=0.5),
}


def _logger(run_dir: Path):
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.FileHandler(run_dir / "train.log"), logging.StreamHandler(sys.stderr)])
    return logging.getLogger("recon-train").info


def procedural_clouds(per_category: int, classes: list[str], points: int = 1024, seed: int = 0):
    """Procedural train shapes as extra named classes for pretraining: (clouds in the model's z-up frame,
    labels, class names = `classes` + the generator's categories not already among them)."""
    import numpy as np

    from recon_serve.data.procedural import generate_dataset
    from recon_serve.geometry.normalise import normalise
    from recon_serve.geometry.preprocess import up_rotation

    ds = generate_dataset(per_category=per_category, seed=seed, split="train", n_points=points, progress=True)
    names = list(classes) + [c for c in ds.categories if c not in classes]
    rot = up_rotation("y")
    pts = np.stack([normalise(p @ rot.T) for p in ds.points]).astype(np.float32)
    return pts, np.array([names.index(ds.categories[c]) for c in ds.category_ids], np.int64), names


def run_stage(stage: str, recipe: Recipe, run: Path, init, config: str, data, log, procedural: int = 0):
    """Train one stage from `init` (a checkpoint) or a fresh `config`; writes <run>/<stage>.pt.
    procedural > 0 (pretraining only): add that many generated shapes per category as more named classes."""
    import numpy as np

    out = run / f"{stage}.pt"
    if out.exists():
        log(f"[{stage}] {out} exists, skipping")
        return out
    train_pts, train_y, classes, _ = load_modelnet10("train", data)
    if procedural and stage == "pretrain":
        extra_pts, extra_y, classes = procedural_clouds(procedural, classes, train_pts.shape[1])
        train_pts, train_y = np.concatenate([train_pts, extra_pts]), np.concatenate([train_y, extra_y])
        log(f"[{stage}] + {len(extra_pts)} procedural shapes: {len(classes)} named classes")
    test = load_modelnet10("test", data)
    model, ckpt = create_model(init) if init else create_model(config, num_classes=len(classes))
    if model.cls_head is None or model.cfg.num_classes != len(classes):
        model.set_num_classes(len(classes))
    history = (ckpt or {}).get("recipe", {}).get("stages", [])
    ema = train(model.train(), (train_pts, train_y), recipe, run, classes,
                test_data=test[:2] if len(classes) == len(test[2]) else None, log=log)
    metrics = None
    if stage == "finetune":
        t = time.time()
        metrics = evaluate(ema, test[0], test[1], classes)
        metrics["eval_seconds"] = round(time.time() - t, 1)
        log("test: " + json.dumps(metrics))
    write_stage_checkpoint(out, ema, classes, recipe, history, metrics)
    return out


def run_broad_stage(stage: str, recipe: Recipe, run: Path, init, config: str, data, log, data_recipe: dict):
    """One stage of the broad model on every source (training/sources.py); writes <run>/<stage>.pt.
    pretrain: every training shape, captions from all of a class's names; finetune: real shapes only,
    a head over the classes they cover, validation accuracy logged each epoch."""
    from training.sources import build_splits

    out = run / f"{stage}.pt"
    if out.exists():
        log(f"[{stage}] {out} exists, skipping")
        return out
    vocab, splits, held = build_splits(data, **data_recipe)
    train_set = splits["train"]
    if stage == "finetune":
        train_set = train_set.take(np.flatnonzero(train_set.sources != "procedural"))
    classes = sorted(set(train_set.labels.tolist()))
    head = {c: i for i, c in enumerate(classes)}
    names = [vocab.names(vocab.classes[c]) for c in classes]
    y = np.array([head[c] for c in train_set.labels])
    log(f"[{stage}] {len(train_set)} shapes in {len(classes)} classes; held out: {len(splits['val'])} val, "
        f"{len(splits['disjoint'])} class-disjoint ({len(held)} classes)")
    model, ckpt = create_model(init) if init else create_model(config, num_classes=len(classes))
    if model.cls_head is None or model.cfg.num_classes != len(classes) or (ckpt or {}).get("class_names") != [n[0] for n in names]:
        model.set_num_classes(len(classes))
    val = splits["val"].take([i for i, c in enumerate(splits["val"].labels) if c in head])
    val_data = (np.stack([p[:recipe.n_points] for p in val.points]), np.array([head[c] for c in val.labels]))
    history = (ckpt or {}).get("recipe", {}).get("stages", [])
    ema = train(model.train(), (train_set.points, y), recipe, run, names,
                test_data=val_data if stage == "finetune" else None, log=log)
    extra = {"vocabulary": vocab.to_dict(), "splits": {**data_recipe, "disjoint_classes": held}}
    for k in ("part_names", "category_parts", "seg_data"):  # a warm start keeps its part head's description
        if (ckpt or {}).get(k) is not None and model.seg_head is not None:
            extra[k] = ckpt[k]
    write_stage_checkpoint(out, ema, [n[0] for n in names], recipe, history, extra=extra)
    return out


def run_calibration(run: Path, init, data, data_recipe: dict, log, seed: int = 0):
    """The last step, on validation data only; writes <run>/final.pt.
    - shape embedding: the pooling (SHAPE_EMBEDDINGS) with the best mean PSB measure on `val`;
    - zero-shot temperature: fitted on one half of `val` (prompts over every class the head knows),
      expected calibration error reported on the other half before (T=0.01) and after, and on the
      class-disjoint shapes (prompts over their own class words)."""
    from recon_serve.calibration import DEFAULT_TEMPERATURE, expected_calibration_error, fit_temperature, softmax
    from recon_serve.evaluate import encode
    from recon_serve.model.recon import SHAPE_EMBEDDINGS
    from recon_serve.model.text import load_teacher, zero_shot_weights
    from recon_serve.retrieval import retrieval_measures
    from training.sources import build_splits

    out = run / "final.pt"
    if out.exists():
        log(f"[calibrate] {out} exists, skipping")
        return out
    vocab, splits, _ = build_splits(data, **data_recipe)
    model, ckpt = create_model(init)
    names = list(ckpt["class_names"])
    teacher = load_teacher()
    report = {}
    sets = {}
    for split in ("val", "disjoint"):
        sh = splits[split]
        pts = np.stack([p[:model.cfg.num_points] for p in sh.points])
        sets[split] = (encode(model, pts, shape_kinds=SHAPE_EMBEDDINGS), [vocab.classes[c] for c in sh.labels])
    enc, val_words = sets["val"]
    val_y = np.array([names.index(w) if w in names else -1 for w in val_words])
    keep = val_y >= 0
    scores = {k: retrieval_measures(enc[f"shape:{k}"][keep] @ enc[f"shape:{k}"][keep].T, val_y[keep]) for k in SHAPE_EMBEDDINGS}
    best = max(SHAPE_EMBEDDINGS, key=lambda k: np.mean([scores[k][m] for m in ("nn", "first_tier", "second_tier", "dcg")]))
    report["shape_embedding"] = {"chosen": best, "val": scores,
                                 "text_embedding_val": retrieval_measures(enc["embedding"][keep] @ enc["embedding"][keep].T, val_y[keep])}
    sims = enc["embedding"][keep] @ zero_shot_weights(teacher, names).numpy().T
    yv = val_y[keep]
    half = np.random.default_rng(seed).permutation(len(yv)) < len(yv) // 2
    T = fit_temperature(sims[half], yv[half])
    ece = lambda s, y, t: expected_calibration_error(softmax(s / t), y)  # noqa: E731
    report["zero_shot"] = {"temperature": T, "fitted_on": int(half.sum()), "checked_on": int((~half).sum()),
                           "val_ece_before": ece(sims[~half], yv[~half], DEFAULT_TEMPERATURE),
                           "val_ece_after": ece(sims[~half], yv[~half], T),
                           "val_top1": float((sims[~half].argmax(1) == yv[~half]).mean())}
    enc_d, words_d = sets["disjoint"]
    dnames = sorted(set(words_d))
    yd = np.array([dnames.index(w) for w in words_d])
    sd = enc_d["embedding"] @ zero_shot_weights(teacher, dnames).numpy().T
    report["zero_shot"].update(disjoint_ece_before=ece(sd, yd, DEFAULT_TEMPERATURE), disjoint_ece_after=ece(sd, yd, T),
                               disjoint_top1=float((sd.argmax(1) == yd).mean()), disjoint_chance=1 / len(dnames))
    log("[calibrate] " + json.dumps(report))
    model.cfg.shape_embedding = best
    metrics = {**(ckpt.get("metrics") or {}), "validation": report}
    extra = {k: ckpt[k] for k in ("vocabulary", "splits", "part_names", "category_parts", "seg_data") if k in ckpt}
    from recon_serve.model.checkpoint import save_checkpoint

    save_checkpoint(out, model, class_names=names, teacher=ckpt.get("teacher"), recipe=ckpt.get("recipe"),
                    metrics=metrics, extra={**extra, "zero_shot_temperature": T})
    return out


def run_seg_stage(recipe: Recipe, run: Path, init, per_category: int, points: int, seed: int, log, test_per_category: int = 20):
    """Add and train a part segmentation head on procedural shapes; writes <run>/seg.pt."""
    import numpy as np

    from recon_serve.data.procedural import generate_dataset
    from recon_serve.evaluate import evaluate_seg
    from recon_serve.geometry.normalise import normalise
    from recon_serve.geometry.preprocess import up_rotation

    out = run / "seg.pt"
    if out.exists():
        log(f"[seg] {out} exists, skipping")
        return out
    train_set = generate_dataset(per_category=per_category, seed=seed, split="train", n_points=points, progress=True)
    model, ckpt = create_model(init)
    n_parts = len(train_set.part_names)
    if (ckpt or {}).get("part_names") == train_set.part_names:  # refine the trained head
        if recipe.seg_encoder and model.seg_encoder is None:
            model.set_num_parts(n_parts, own_encoder=True)  # rebuilds the head: keep it
            model.load_state_dict(ckpt["state_dict"], strict=False)
        if recipe.seg_local_k and recipe.seg_local_k != model.cfg.seg_local_k:
            trained = model.seg_head.state_dict()
            model.cfg.seg_local_k = recipe.seg_local_k
            model.set_num_parts(n_parts)
            model.seg_head.load_grown(trained)
            log(f"[seg] head grown with a {recipe.seg_local_k}-nearest-point descriptor, starting from the trained head")
    else:
        model.cfg.seg_local_k = recipe.seg_local_k
        model.set_num_parts(n_parts, own_encoder=recipe.seg_encoder)
    to_model = up_rotation("y")  # procedural shapes are y-up; the model frame is z-up (ModelNet10)
    pts = np.stack([normalise(p @ to_model.T) for p in train_set.points])
    history = (ckpt or {}).get("recipe", {}).get("stages", [])
    ema = train(model.train(), (pts, train_set.labels), recipe, run, ckpt.get("class_names") or [], log=log)
    test_set = generate_dataset(per_category=test_per_category, seed=seed, split="test", n_points=points)
    metrics = dict(ckpt.get("metrics") or {})
    metrics["seg"] = {k: v for k, v in evaluate_seg(ema, test_set).items() if k not in ("per_category", "per_part")}
    log("seg test: " + json.dumps(metrics["seg"]))
    extra = {"part_names": train_set.part_names, "category_parts": train_set.category_parts,
             "seg_data": {"generator": "recon_serve.data.procedural", "per_category": per_category, "points": points, "seed": seed}}
    write_stage_checkpoint(out, ema, ckpt.get("class_names"), recipe, history, metrics, extra=extra)
    return out


def generate_files(out: Path, per_category: int, points: int, seed: int, split: str, fmt: str, categories=None):
    """Write <out>/<category>/<id>.<fmt> (ShapeNetPart-style global part labels) and <out>/parts.json."""
    from tqdm import tqdm

    from recon_serve.data.procedural import (CATEGORIES, generate, label_offsets, split_seeds, write_parts_json,
                                     write_ply, write_shapenetpart_txt)

    cats = sorted(categories or CATEGORIES)
    unknown = set(cats) - set(CATEGORIES)
    if unknown:
        raise SystemExit(f"unknown categories {sorted(unknown)}; known: {' '.join(sorted(CATEGORIES))}")
    out.mkdir(parents=True, exist_ok=True)
    write_parts_json(out / "parts.json", cats)
    offset = label_offsets(cats)
    jobs = [(c, s) for c in cats for s in split_seeds(split, per_category, seed)]
    for cat, s in tqdm(jobs, desc=f"generate {split}", unit="shape"):
        shape = generate(cat, s, points)
        path = out / cat / f"{s:08d}.{fmt}"
        path.parent.mkdir(exist_ok=True)
        labels = shape.labels + offset[cat]
        if fmt == "ply":
            write_ply(path, shape.points, labels)
        else:
            write_shapenetpart_txt(path, shape.points, labels, shape.normals)
    return len(jobs)


def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")


def _add_recipe_args(p, skip=()):
    """One option per Recipe field (default None = the recipe's own default)."""
    for f in Recipe.__dataclass_fields__.values():
        if f.name != "stage" and f.name not in skip:
            kind = _flag if isinstance(f.default, bool) else type(f.default)
            p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="recon-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("pretrain", "finetune"):
        p = sub.add_parser(name)
        p.add_argument("--config", default="tiny", help="config name for a fresh model")
        p.add_argument("--init", help="start from this checkpoint")
        p.add_argument("--run", required=True, type=Path, help="run directory (state, logs, output)")
        p.add_argument("--data", help="data root (default $RECON_DATA or ../shared/data)")
        _add_recipe_args(p)
        if name == "pretrain":
            p.add_argument("--procedural", type=int, default=0,
                           help="also pretrain on N generated shapes per procedural category (more class names)")
    sg = sub.add_parser("finetune-seg", help="add a part segmentation head trained on procedural shapes")
    sg.add_argument("--init", required=True, help="classification checkpoint to extend")
    sg.add_argument("--run", required=True, type=Path)
    sg.add_argument("--per-category", type=int, default=DEFAULT_RECIPE["seg_data"]["per_category"])
    sg.add_argument("--points", type=int, default=DEFAULT_RECIPE["seg_data"]["points"])
    sg.add_argument("--seed", type=int, default=0)
    sg.add_argument("--test-per-category", type=int, default=20, help="held-out shapes per category for the mIoU logged")
    _add_recipe_args(sg, skip=("seed",))
    d = sub.add_parser("default", help="run the shipped default's full recipe")
    d.add_argument("--run", type=Path, default=Path("runs/default"))
    d.add_argument("--data")
    d.add_argument("--init", help="warm start the pretraining from this checkpoint (the model card names the one used)")
    d.add_argument("--refine", action="store_true",
                   help="skip pretraining: fine-tune --init further with the 'refine' recipe, then seg and calibration")
    d.add_argument("--class-balance", type=float, default=None,
                   help="fine-tuning draws a shape of a class with n shapes weighted n^-B (default 0: a plain shuffle)")
    sp = sub.add_parser("splits", help="write the default recipe's val / class-disjoint / test splits as packed .npz sets")
    sp.add_argument("--out", type=Path, required=True)
    sp.add_argument("--data")
    gp = sub.add_parser("gpu-pack", help="pack data, caption features and start weights for a GPU run (training/gpu.py)")
    gp.add_argument("--out", type=Path, required=True)
    gp.add_argument("--data")
    gp.add_argument("--init", help="start model (default: the shipped one)")
    gu = sub.add_parser("gpu-unpack", help="<run>/finetune.pt from a GPU run's files (training/gpu.py)")
    gu.add_argument("--from", dest="src", type=Path, required=True, help="the folder the GPU run wrote (its $OUT)")
    gu.add_argument("--run", type=Path, required=True)
    gu.add_argument("--pack", type=Path, required=True, help="the pack that run was given")
    g = sub.add_parser("generate", help="write procedural part-labelled shapes (recon_serve/data/procedural)")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--per-category", type=int, default=16)
    g.add_argument("--points", type=int, default=2048)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--split", choices=("train", "test"), default="train")
    g.add_argument("--format", choices=("txt", "ply"), default="txt")
    g.add_argument("--categories", nargs="*", help="default: all")
    r = sub.add_parser("retrain", help="fine-tune the current model on your labelled shapes (see training/retrain.py)")
    r.add_argument("data", help="folder of <class>/ sub-folders, or a CSV with path,label[,split]")
    r.add_argument("--out", type=Path, required=True, help="run directory: candidate.pt, retrain_report.json, state")
    r.add_argument("--init", help="current model checkpoint (default: the live version of --repo, else the shipped model)")
    r.add_argument("--repo", help="model repository whose live version is the current model")
    r.add_argument("--epochs", type=int, default=10)
    r.add_argument("--lr", type=float, default=2e-4)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--points", type=int, default=1024)
    r.add_argument("--up-axis", choices=("y", "z"), default="z")
    r.add_argument("--test-fraction", type=float, default=0.2, help="held out per class when DATA has no split")
    r.add_argument("--limit-per-class", type=int, help="use at most this many files per class and split")
    r.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "retrain":
        from training.retrain import print_report, retrain

        try:
            report = retrain(args.data, args.out, init=args.init, repo=args.repo, epochs=args.epochs, lr=args.lr,
                             batch_size=args.batch_size, n_points=args.points, up_axis=args.up_axis,
                             test_fraction=args.test_fraction, limit_per_class=args.limit_per_class,
                             seed=args.seed, log=_logger(args.out))
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: {e}") from None
        print_report(report)
        return
    if args.cmd == "splits":
        from recon_serve.data.packed import save_packed
        from training.sources import build_splits

        vocab, splits, held = build_splits(args.data, **DEFAULT_RECIPE["data"])
        for name in ("val", "disjoint", "test"):
            save_packed(args.out / f"{name}.npz", splits[name].packed(vocab, name=name))
        print(f"{args.out}: val {len(splits['val'])}, disjoint {len(splits['disjoint'])} ({len(held)} classes: "
              f"{', '.join(held)}), test {len(splits['test'])} shapes")
        return
    if args.cmd in ("gpu-pack", "gpu-unpack"):
        from training import gpu

        try:
            if args.cmd == "gpu-pack":
                gpu.build_pack(args.out, args.data, args.init)
            else:
                gpu.unpack(args.src, args.run, args.pack)
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise SystemExit(f"error: {e}") from None
        return
    if args.cmd == "generate":
        generate_files(args.out, args.per_category, args.points, args.seed, args.split, args.format, args.categories)
        return
    log = _logger(args.run)

    if args.cmd == "default":
        R = dict(DEFAULT_RECIPE)
        if args.class_balance is not None:
            R["finetune"], R["refine"] = (replace(R[k], class_balance=args.class_balance) for k in ("finetune", "refine"))
        if args.refine:
            if not args.init:
                raise SystemExit("error: --refine needs --init (the model to fine-tune further)")
            fin = run_broad_stage("finetune", R["refine"], args.run, args.init, R["config"], args.data, log, R["data"])
        else:
            pre = run_broad_stage("pretrain", R["pretrain"], args.run, args.init, R["config"], args.data, log, R["data"])
            fin = run_broad_stage("finetune", R["finetune"], args.run, pre, R["config"], args.data, log, R["data"])
        seg = run_seg_stage(R["refine_seg" if args.refine else "seg"], args.run, fin, log=log, **R["seg_data"])
        final = run_calibration(args.run, seg, args.data, R["data"], log)
        slim_checkpoint(final, DEFAULT_CHECKPOINT)
        log(f"shipped {DEFAULT_CHECKPOINT} ({DEFAULT_CHECKPOINT.stat().st_size / 1e6:.1f} MB)")
        return
    if args.cmd == "finetune-seg":
        overrides = {k: getattr(args, k) for k in Recipe.__dataclass_fields__ if k != "stage" and getattr(args, k, None) is not None}
        recipe = Recipe(**{**asdict(DEFAULT_RECIPE["seg"]), **overrides})
        run_seg_stage(recipe, args.run, args.init, args.per_category, args.points, args.seed, log, args.test_per_category)
        return
    overrides = {k: getattr(args, k) for k in Recipe.__dataclass_fields__ if k != "stage" and getattr(args, k) is not None}
    recipe = Recipe(stage=args.cmd, **overrides)
    log(f"[{args.cmd}] recipe {asdict(recipe)}")
    run_stage(args.cmd, recipe, args.run, args.init, args.config, args.data, log,
              procedural=getattr(args, "procedural", 0))


if __name__ == "__main__":
    main()
