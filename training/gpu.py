"""The broad model's fine-tuning on a lent GPU machine, in one time-boxed run.

Such a machine (one H200 here, minutes at a time) has PyTorch but not this project's dependencies,
takes at most 64 MiB of input per run (the working tree included) and gives back at most 8 files
of 16 MiB. So the work is split in three:

    recon-train gpu-pack --out runs/gpu_pack         # here: data, caption features, start weights
    python3 -m training.gpu run --pack runs/gpu_pack --out $OUT --seconds 420   # there
    recon-train gpu-unpack --from DIR --run runs/gpu # here: <run>/finetune.pt from what came back
    recon-train default --refine --run runs/gpu --init models/default/recon_default.pt
                                                     # here: seg head, calibration, ship (finetune.pt is kept)

The pack holds the default recipe's training and validation shapes (the same splits, class-disjoint
classes held out) at 1,024 points with 8-bit coordinates per shape, the text teacher's features of
every caption the fine-tuning and its zero-shot check use (so no text model runs there), and the
start model in fp16 without its part head (`--init`, default the shipped model): 56 MiB in all. The
tracked `models/default/recon_default.pt` would travel with the working tree too (49 MB, over the
limit with the pack): untrack it for the run (`git rm -q --cached models/default/recon_default.pt`,
then `git add models/default/recon_default.pt` after) and carry the pack (`carry: ["runs/gpu_pack"]`).

`run` imports only torch, numpy, tqdm and this repository's model and training loop: two timed
epochs on a copy first, then as many epochs as fit in `--seconds` (a fresh cosine schedule over them), the
validation OA logged every tenth of them, and the EMA weights written back in fp32 in pieces
(`weights.N.pt`) with `run.json`. The validation split is the one every CPU choice used; the test
split is not in the pack.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

PIECE_BYTES = 15 * 2**20  # what comes back: files of at most 16 MiB
INPUT_LIMIT = 64 * 2**20  # what travels there: the working tree plus the pack
RECIPE_DEFAULTS = {"batch_size": 128, "lr": 5e-4, "warmup_epochs": 5, "point_dropout": 0.5, "weight_decay": 0.05}


# ---------------------------------------------------------------- the pack (here)

def quantise(clouds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[N,P,3] float -> (uint8 codes, per-cloud low corner [N,3], per-cloud step [N]): at most half a
    step (1/255 of the cloud's widest extent) off per coordinate."""
    lo = clouds.min(axis=1)
    step = np.maximum((clouds.max(axis=1) - lo).max(axis=1) / 255.0, 1e-12)
    codes = np.rint((clouds - lo[:, None]) / step[:, None, None])
    return np.clip(codes, 0, 255).astype(np.uint8), lo.astype(np.float32), step.astype(np.float32)


def dequantise(codes, lo, step):
    """The inverse of quantise, re-centred and scaled to the unit sphere as every model input is."""
    from recon_serve.geometry.normalise import normalise

    pts = codes.astype(np.float32) * step[:, None, None] + lo[:, None]
    return np.stack([normalise(p) for p in pts])


def fixed_subset(points: list, n: int, seed: int) -> np.ndarray:
    """[N,n,3]: clouds of exactly n points (a seeded random subset of those with more)."""
    rng = np.random.default_rng(seed)
    return np.stack([p if len(p) == n else p[np.sort(rng.choice(len(p), n, replace=False))] for p in points])


def build_pack(out: Path, data=None, init=None, n_points: int = 1024, seed: int = 0, log=print) -> dict:
    """Write <out>/pack.npz, <out>/init.pt and <out>/meta.json; returns the meta."""
    from recon_serve.model.checkpoint import read_checkpoint
    from recon_serve.model.factory import DEFAULT_CHECKPOINT
    from recon_serve.model.text import TEMPLATES, class_text, load_teacher
    from training.cli import DEFAULT_RECIPE
    from training.sources import build_splits

    vocab, splits, held = build_splits(data, **DEFAULT_RECIPE["data"])
    train_set = splits["train"].take(np.flatnonzero(splits["train"].sources != "procedural"))
    classes = sorted(set(train_set.labels.tolist()))
    head = {c: i for i, c in enumerate(classes)}
    names = [vocab.names(vocab.classes[c]) for c in classes]
    val = splits["val"].take([i for i, c in enumerate(splits["val"].labels) if c in head])
    prompts = sorted({t.format(class_text(n)) for ns in names for n in ns for t in TEMPLATES})
    teacher = load_teacher()
    init = Path(init or DEFAULT_CHECKPOINT)
    meta = write_pack(out, (fixed_subset(train_set.points, n_points, seed), [head[c] for c in train_set.labels]),
                      (np.stack([p[:n_points] for p in val.points]), [head[c] for c in val.labels]),  # val as the CPU runs read it
                      names, prompts, teacher(prompts).numpy(), teacher.name, read_checkpoint(init),
                      {"init": str(init.resolve()), "init_sha256": file_sha256(init), "seed": seed,
                       "data_recipe": DEFAULT_RECIPE["data"], "disjoint_classes": held})
    size = sum(f.stat().st_size for f in out.iterdir())
    log(f"{out}: {meta['train']} training and {meta['val']} validation shapes in {meta['classes']} classes, "
        f"{len(prompts)} caption features, start weights from {init}: {size / 2**20:.1f} MiB")
    if size > INPUT_LIMIT - 8 * 2**20:
        log(f"warning: {size / 2**20:.1f} MiB leaves little of the {INPUT_LIMIT / 2**20:.0f} MiB for the working tree")
    return meta


def write_pack(out: Path, train, val, names, prompts, features, teacher_name: str, ckpt: dict, extra: dict) -> dict:
    """The pack from (clouds [N,P,3], labels) for training and validation, every class's names, the
    captions with their teacher features, and the start checkpoint (its part head left out)."""
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for key, (pts, y) in (("train", train), ("val", val)):
        arrays[f"{key}_codes"], arrays[f"{key}_lo"], arrays[f"{key}_step"] = quantise(np.asarray(pts, np.float32))
        arrays[f"{key}_y"] = np.asarray(y, np.int16)
    arrays["features"] = np.asarray(features, np.float16)
    np.savez_compressed(out / "pack.npz", **arrays)
    config = {**ckpt["config"], "num_parts": 0}  # the part head is retrained here afterwards
    state = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()
             if not k.startswith(("seg_head.", "seg_encoder."))}
    torch.save({"config": config, "state_dict": state}, out / "init.pt")
    meta = {"class_names": [[n] if isinstance(n, str) else list(n) for n in names], "prompts": list(prompts),
            "teacher": teacher_name, "n_points": int(np.asarray(train[0]).shape[1]), "train": len(train[1]),
            "val": len(val[1]), "classes": len(names), **extra}
    (out / "meta.json").write_text(json.dumps(meta))
    return meta


# ---------------------------------------------------------------- the run (there)

class FeatureTeacher:
    """The text teacher's features, looked up: what the pack computed for every caption it needs."""

    def __init__(self, prompts: list[str], features: np.ndarray, name: str):
        self.index = {p: i for i, p in enumerate(prompts)}
        self.features = torch.from_numpy(features.astype(np.float32))
        self.name = name

    def __call__(self, texts: list[str], batch_size: int = 0) -> torch.Tensor:
        missing = [t for t in texts if t not in self.index]
        if missing:
            raise KeyError(f"{len(missing)} captions are not in the pack, e.g. {missing[0]!r}")
        return self.features[[self.index[t] for t in texts]]


def load_pack(pack: Path, device) -> tuple:
    """(train (points, labels), val (points, labels), names, teacher, init checkpoint, meta) with the
    training clouds already on `device`."""
    meta = json.loads((pack / "meta.json").read_text())
    z = np.load(pack / "pack.npz")
    train_pts = torch.from_numpy(dequantise(z["train_codes"], z["train_lo"], z["train_step"])).to(device)
    train_y = torch.from_numpy(z["train_y"].astype(np.int64)).to(device)
    val = (dequantise(z["val_codes"], z["val_lo"], z["val_step"]), z["val_y"].astype(np.int64))
    teacher = FeatureTeacher(meta["prompts"], z["features"], meta["teacher"])
    init = torch.load(pack / "init.pt", map_location="cpu", weights_only=False)
    init["state_dict"] = {k: v.float() if v.is_floating_point() else v for k, v in init["state_dict"].items()}
    return (train_pts, train_y), val, meta["class_names"], teacher, init, meta


def epochs_for(seconds: float, epoch_s: float, eval_s: float, evals: int = 10) -> int:
    """How many epochs fit in `seconds`, from one timed epoch and one validation pass (`evals` of them
    run), with a tenth kept back for the EMA's last validation and writing the weights."""
    return max(1, int((0.9 * seconds - evals * eval_s) / epoch_s))


def run(pack: Path, out: Path, seconds: float, recipe_overrides: dict | None = None, limit: int | None = None,
        log=print) -> dict:
    """Fine-tune the pack's start model for about `seconds` in all; limit: train and validate on N
    random shapes only (a smoke run on a CPU)."""
    import shutil
    import tempfile

    from recon_serve.evaluate import evaluate
    from recon_serve.model.factory import model_from_checkpoint
    from recon_serve.runtime import default_device
    from training.train import Recipe, train

    t_start = time.time()
    device = default_device()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="recon-gpu-"))  # logs of the probe and the run (run.json has them)
    train_data, val, names, teacher, init, meta = load_pack(pack, device)
    if limit:  # a seeded random subset: the pack is ordered by class
        pick = torch.randperm(len(train_data[1]), generator=torch.Generator().manual_seed(0))[:limit]
        train_data = (train_data[0][pick.to(device)], train_data[1][pick.to(device)])
        keep = np.random.default_rng(0).permutation(len(val[1]))[:limit]
        val = (val[0][keep], val[1][keep])
    first_names = [n[0] for n in names]
    log(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), torch {torch.__version__}; "
        f"{len(train_data[1])} training shapes, {len(val[1])} validation, {len(names)} classes; "
        f"loaded in {time.time() - t_start:.1f} s")
    base = Recipe(stage="finetune", save_state=False, n_points=meta["n_points"], **{**RECIPE_DEFAULTS, **(recipe_overrides or {})})

    # two epochs on a copy: the second one's time (the first pays for compilation and warm-up)
    probe = model_from_checkpoint(init).train()
    train(probe, train_data, replace(base, epochs=2, warmup_epochs=1), scratch / "probe", names, teacher=teacher,
          log=lambda *_: None, progress=False)
    epoch_s = [json.loads(line)["seconds"] for line in (scratch / "probe" / "finetune.log.jsonl").read_text().splitlines()][-1]
    epoch_s = max(epoch_s, 1e-3)
    t0 = time.time()
    evaluate(probe.eval(), val[0], val[1], first_names, teacher)
    eval_s = time.time() - t0
    del probe
    left = seconds - (time.time() - t_start)
    epochs = epochs_for(left, epoch_s, eval_s)
    recipe = replace(base, epochs=epochs, warmup_epochs=min(base.warmup_epochs, max(1, epochs // 10)),
                     eval_every=max(1, math.ceil(epochs / 10)))
    shapes_per_s = (len(train_data[1]) // base.batch_size) * base.batch_size / epoch_s
    log(f"an epoch {epoch_s:.1f} s ({shapes_per_s:.0f} shapes/s), validation {eval_s:.1f} s: "
        f"{epochs} epochs in the {left:.0f} s left; recipe {asdict(recipe)}")

    model = model_from_checkpoint(init).train()
    ema = train(model, train_data, recipe, scratch / "run", names, test_data=val, teacher=teacher, log=log, progress=False)
    final = evaluate(ema, val[0], val[1], first_names, teacher)
    state = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in ema.state_dict().items()}
    pieces = save_pieces(state, out)
    history = [json.loads(line) for line in (scratch / "run" / "finetune.log.jsonl").read_text().splitlines()]
    shutil.rmtree(scratch, ignore_errors=True)
    summary = {"device": str(device), "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
               "torch": torch.__version__, "seconds_budget": seconds, "seconds": round(time.time() - t_start, 1),
               "epoch_s": round(epoch_s, 2), "shapes_per_s": round(shapes_per_s, 1),
               "validation_s": round(eval_s, 2), "recipe": asdict(recipe), "config": init["config"],
               "val_final_ema": final, "epochs_log": history, "pieces": pieces, "pack": meta_brief(meta)}
    (out / "run.json").write_text(json.dumps(summary, indent=1))
    log(f"validation OA (EMA) {final['oa']:.2f} %, {summary['seconds']:.0f} s in all; wrote {', '.join(pieces)}")
    return summary


def meta_brief(meta: dict) -> dict:
    return {k: meta.get(k) for k in ("init", "init_sha256", "teacher", "n_points", "seed", "train", "val", "classes")}


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_pieces(state: dict, out: Path, limit: int = PIECE_BYTES) -> list[str]:
    """The state dict as weights.0.pt, weights.1.pt, ... each under `limit` bytes of tensor data."""
    pieces, current, size = [], {}, 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if current and size + nbytes > limit:
            pieces.append(current)
            current, size = {}, 0
        current[k] = v
        size += nbytes
    pieces.append(current)
    names = []
    for i, piece in enumerate(pieces):
        torch.save(piece, out / f"weights.{i}.pt")
        names.append(f"weights.{i}.pt")
    return names


# ---------------------------------------------------------------- back here

def unpack(src: Path, run_dir: Path, pack: Path, log=print) -> Path:
    """<run>/finetune.pt from a GPU run's pieces: its weights, the start checkpoint's part head and
    descriptions, and the run's recipe in the history; `recon-train default --refine --run <run>`
    then adds the seg stage and calibration."""
    from recon_serve.model.factory import create_model
    from training.sources import build_splits
    from training.train import Recipe, write_stage_checkpoint

    summary = json.loads((src / "run.json").read_text())
    meta = json.loads((pack / "meta.json").read_text())
    state = {}
    for name in summary["pieces"]:
        state.update(torch.load(src / name, map_location="cpu", weights_only=True))
    if file_sha256(Path(meta["init"])) != meta["init_sha256"]:
        raise ValueError(f"{meta['init']} changed since the pack was made: its part head and descriptions would not match")
    model, ckpt = create_model(meta["init"])
    merged = {**model.state_dict(), **state}  # the part head stays the start model's
    missing = [k for k in model.state_dict() if k not in state and not k.startswith(("seg_head.", "seg_encoder."))]
    if missing:
        raise ValueError(f"the GPU run's weights lack {missing[:5]}")
    model.load_state_dict(merged)
    vocab, _, held = build_splits(None, **meta["data_recipe"])
    if held != meta["disjoint_classes"]:
        raise ValueError("the data here splits differently from the pack's: not the same data root or recipe")
    recipe = Recipe(**{k: v for k, v in summary["recipe"].items() if k in Recipe.__dataclass_fields__})
    history = (ckpt or {}).get("recipe", {}).get("stages", [])
    extra = {"vocabulary": vocab.to_dict(), "splits": {**meta["data_recipe"], "disjoint_classes": held},
             "gpu_run": {k: summary[k] for k in ("gpu", "torch", "seconds", "shapes_per_s", "val_final_ema")}}
    for k in ("part_names", "category_parts", "seg_data"):
        if ckpt.get(k) is not None:
            extra[k] = ckpt[k]
    out = run_dir / "finetune.pt"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_stage_checkpoint(out, model, [n[0] for n in meta["class_names"]], recipe, history, extra=extra)
    log(f"{out}: the GPU run's model (validation OA {summary['val_final_ema']['oa']:.2f} %, "
        f"{summary['recipe']['epochs']} epochs in {summary['seconds']:.0f} s on {summary['gpu']})")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m training.gpu", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="on the GPU machine: fine-tune within --seconds, write the weights to --out")
    r.add_argument("--pack", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--seconds", type=float, default=420)
    r.add_argument("--limit", type=int, help="train and validate on N random shapes only (a smoke run)")
    for k, v in RECIPE_DEFAULTS.items():
        r.add_argument("--" + k.replace("_", "-"), type=type(v), default=None)
    args = ap.parse_args(argv)
    overrides = {k: getattr(args, k) for k in RECIPE_DEFAULTS if getattr(args, k) is not None}
    run(args.pack, args.out, args.seconds, overrides, args.limit, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    sys.exit(main())
