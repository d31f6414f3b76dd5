"""`recon-train retrain DATA --out DIR` (also `recon-serve retrain`): fine-tune the current model on a
user's labelled shapes, and measure it against the current model on a held-out split.

DATA is a folder with one sub-folder per class (`<class>/<file>`, or `<class>/{train,test}/<file>`
as ModelNet has it; then that split is used), or a CSV with `path,label[,split]` columns. Any
format the server reads works; broken files are skipped and listed. Without a given split, a
stratified `--test-fraction` is held out (fixed seed).

The current model is `--init` (a checkpoint), else the live version of `--repo`, else the shipped
default. When the user's classes differ from its classes it gets a new classification head, and
its own score on the held-out split is the text-prompted one (the class names as prompts), the
only way it can name classes it never had. Writes <out>/candidate.pt and <out>/retrain_report.json;
`recon-serve deploy <out>/candidate.pt` reads the report and refuses a worse model unless forced.
Training state lives in <out>/finetune.state.pt, so a killed retrain resumes.
"""
from __future__ import annotations

import csv
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from recon_serve.geometry.decode import FORMATS


def labelled_files(data) -> list[tuple[Path, str, str | None]]:
    """(path, label, split or None) for every shape file the layout names."""
    data = Path(data)
    if data.is_file():
        with open(data, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"path", "label"} <= set(rows[0]):
            raise ValueError(f"{data}: a retrain CSV needs 'path' and 'label' columns")
        return [((data.parent / r["path"]) if not Path(r["path"]).is_absolute() else Path(r["path"]),
                 r["label"], r.get("split") or None) for r in rows]
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such folder or CSV")
    out = []
    for cls in sorted(p for p in data.iterdir() if p.is_dir()):
        for p in sorted(cls.rglob("*")):
            if p.is_file() and p.suffix.lower() in FORMATS:
                rel = p.relative_to(cls).parts
                split = rel[0] if len(rel) > 1 and rel[0] in ("train", "test") else None
                out.append((p, cls.name, split))
    if not out:
        raise ValueError(f"{data}: no shape files in class sub-folders")
    return out


def load_shapes(files, n_points: int, up_axis: str, limit_per_class: int | None = None, workers: int = 2):
    """Prepared clouds [N,P,3], labels, class names, splits, and the (path, reason) of broken files."""
    from recon_serve.errors import ShapeError
    from recon_serve.geometry.decode import Decoder
    from recon_serve.geometry.preprocess import prepare

    classes = sorted({label for _, label, _ in files})
    if len(classes) < 2:
        raise ValueError(f"retraining a classifier needs at least 2 classes, found {classes}")
    if limit_per_class:
        kept, seen = [], {}
        for f in files:
            key = (f[1], f[2])
            if seen.get(key, 0) < limit_per_class:
                kept.append(f)
                seen[key] = seen.get(key, 0) + 1
        files = kept

    with Decoder(workers=workers) as dec:
        def one(f):
            try:
                return prepare(dec.decode(f[0].name, f[0].read_bytes()), n_points, up_axis=up_axis).points
            except (ShapeError, OSError) as e:
                return f"{getattr(e, 'code', 'unreadable')}: {getattr(e, 'detail', e)}"

        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(one, files))
    ok = [i for i, r in enumerate(results) if not isinstance(r, str)]
    broken = [(str(files[i][0]), r) for i, r in enumerate(results) if isinstance(r, str)]
    if not ok:
        raise ValueError("none of the files could be read")
    points = np.stack([results[i] for i in ok]).astype(np.float32)
    labels = np.array([classes.index(files[i][1]) for i in ok], dtype=np.int64)
    splits = [files[i][2] for i in ok]
    return points, labels, classes, splits, broken


def split_indices(labels: np.ndarray, splits, test_fraction: float, seed: int):
    """The given split when every file has one, else a stratified held-out fraction per class."""
    if all(s is not None for s in splits):
        train = np.array([i for i, s in enumerate(splits) if s == "train"])
        test = np.array([i for i, s in enumerate(splits) if s == "test"])
        if len(train) and len(test):
            return train, test
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = max(1, int(round(len(idx) * test_fraction))) if len(idx) > 1 else 0
        test += idx[:n_test].tolist()
        train += idx[n_test:].tolist()
    return np.array(sorted(train)), np.array(sorted(test))


def current_checkpoint(init=None, repo=None) -> Path:
    from recon_serve.export.triton_repo import CHECKPOINT_FILE
    from recon_serve.export.versions import version_dir
    from recon_serve.model.factory import DEFAULT_CHECKPOINT

    if init:
        return Path(init)
    if repo:
        path = version_dir(repo) / CHECKPOINT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: the live version was exported by an older recon-serve; "
                                    "pass --init with its checkpoint")
        return path
    return DEFAULT_CHECKPOINT


def score(result: dict, head: bool) -> dict:
    """The comparable figure of an evaluate() result: head accuracy, or text-prompted without a head."""
    if head:
        return {"oa": result["oa"], "macc": result["macc"], "method": "classification head",
                "text_prompted_oa": result["zero_shot_oa"]}
    return {"oa": result["zero_shot_oa"], "macc": result["zero_shot_macc"],
            "method": "text-prompted (class names as prompts; the model has no head for these classes)"}


def retrain(data, out, *, init=None, repo=None, epochs: int = 10, lr: float = 2e-4, batch_size: int = 32,
            n_points: int = 1024, up_axis: str = "z", test_fraction: float = 0.2, limit_per_class: int | None = None,
            seed: int = 0, log=print) -> dict:
    import torch

    from recon_serve.evaluate import evaluate
    from recon_serve.model.checkpoint import slim_checkpoint
    from recon_serve.model.factory import create_model
    from recon_serve.model.text import load_teacher
    from training.train import Recipe, train, write_stage_checkpoint

    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = current_checkpoint(init, repo)
    files = labelled_files(data)
    points, labels, classes, splits, broken = load_shapes(files, n_points, up_axis, limit_per_class)
    for path, reason in broken:
        log(f"skipped {path}: {reason}")
    tr, te = split_indices(labels, splits, test_fraction, seed)
    log(f"{len(classes)} classes, {len(tr)} train / {len(te)} held-out shapes ({len(broken)} unreadable) from {base}")
    teacher = load_teacher()

    old, ckpt = create_model(base)
    same_classes = list(ckpt.get("class_names") or []) == classes and old.cls_head is not None
    if not same_classes:
        old.cls_head = None  # its head names other classes: score it by prompts
    before = score(evaluate(old, points[te], labels[te], classes, teacher), same_classes)

    model, ckpt = create_model(base)
    if not same_classes:
        model.set_num_classes(len(classes))
    recipe = Recipe(stage="finetune", epochs=epochs, lr=lr, batch_size=min(batch_size, len(tr)), warmup_epochs=1,
                    seed=seed)
    torch.manual_seed(seed)
    ema = train(model.train(), (points[tr], labels[tr]), recipe, out, classes, teacher=teacher, log=log)
    after = score(evaluate(ema, points[te], labels[te], classes, teacher), True)
    history = (ckpt or {}).get("recipe", {}).get("stages", [])
    metrics = {"retrain": {"held_out": after, "data": str(data), "n_train": int(len(tr)), "n_test": int(len(te))}}
    extra = {k: ckpt[k] for k in ("part_names", "category_parts") if ckpt and k in ckpt}
    full = out / "candidate.full.pt"
    write_stage_checkpoint(full, ema, classes, recipe, history, metrics, extra=extra)
    candidate = out / "candidate.pt"
    slim_checkpoint(full, candidate)
    full.unlink()
    report = {"data": str(data), "base": str(base), "candidate": str(candidate), "classes": classes,
              "n_train": int(len(tr)), "n_test": int(len(te)), "unreadable": [p for p, _ in broken],
              "old": before, "new": after, "better": after["oa"] >= before["oa"],
              "epochs": epochs, "seconds": round(time.time() - t0, 1)}
    (out / "retrain_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def print_report(r: dict) -> None:
    print(f"held-out split: {r['n_test']} shapes of {len(r['classes'])} classes ({r['n_train']} used to train)")
    print(f"  current model    OA {r['old']['oa']:6.2f} %   mean class {r['old']['macc']:6.2f} %   ({r['old']['method']})")
    print(f"  retrained model  OA {r['new']['oa']:6.2f} %   mean class {r['new']['macc']:6.2f} %   ({r['new']['method']})")
    verdict = "better or equal: deploy with" if r["better"] else "WORSE: deploy refuses it unless --force;"
    print(f"  {verdict} `recon-serve deploy {r['candidate']} --repo model_repository`")
