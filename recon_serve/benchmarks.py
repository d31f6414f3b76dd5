"""The evaluation contracts behind `recon-serve eval` and `recon-serve eval-retrieval`.

- `evaluate_benchmark`: ModelNet40 (packed, official test split, 1,024 points) or ModelNet10 (PCDs)
  accuracy. A model trained on a larger vocabulary answers with its logits restricted to the
  benchmark's classes (its head columns whose merged class is one of the benchmark's), so it is
  scored as a classifier over exactly those classes; zero-shot prompts the benchmark's class words.
- `evaluate_retrieval`: leave-one-out shape retrieval (PSB measures) with the shape embedding, the
  text embedding for comparison, text search P@10, zero-shot top-1 and the D2 baseline, one run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recon_serve.data.modelnet import data_root, load_modelnet10
from recon_serve.data.packed import PackedSet, load_packed
from recon_serve.data.vocabulary import canonical
from recon_serve.evaluate import accuracy_report, encode
from recon_serve.model.text import text_side, zero_shot_weights
from recon_serve.retrieval import d2_descriptor, l1_similarity, precision_at_k, retrieval_measures
from recon_serve.runtime import cpu_has_fast_bf16

MODELNET40 = "modelnet40/modelnet40_1024.npz"


def benchmark_split(benchmark: str, root=None) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """(points [N,P,3], labels, class names, split name) of a benchmark's test split."""
    if benchmark == "modelnet10":
        points, labels, classes, _ = load_modelnet10("test", root)
        return points, labels, classes, "modelnet10/test"
    if benchmark == "modelnet40":
        s = load_packed(Path(data_root(root)) / MODELNET40)
        s = s.subset(s.split == "test")
        return s.points, s.labels, s.class_names, "modelnet40/test"
    raise ValueError(f"unknown benchmark {benchmark!r}; choose modelnet40 or modelnet10")


def head_columns(model_classes, benchmark_classes) -> list[int] | None:
    """For each benchmark class, the head column of the same merged class; None if any is missing."""
    where = {canonical(n): i for i, n in enumerate(model_classes)}
    cols = [where.get(canonical(c)) for c in benchmark_classes]
    return None if any(c is None for c in cols) else cols


def evaluate_benchmark(model, ckpt: dict, benchmark: str, root=None, votes: int = 10, teacher=None, backend=None) -> dict:
    """`backend` (e.g. an OrtBackend): its outputs are scored instead of the torch model's."""
    points, labels, classes, split = benchmark_split(benchmark, root)
    words = [canonical(c) for c in classes]
    K = len(classes)
    r = {"benchmark": benchmark, "split": split, "n": int(len(labels)), "votes": votes}
    cols = head_columns(ckpt.get("class_names") or [], classes) if model.cls_head is not None else None
    if model.cls_head is not None and cols is None:
        missing = sorted(set(words) - {canonical(n) for n in ckpt.get("class_names") or []})
        raise ValueError(f"the model's classes lack {missing[:8]} of {benchmark}; it cannot be scored on it")
    out = encode(model, points, votes=votes, backend=backend)
    if cols is not None:
        n_head = out["probs"].shape[1]
        r["restriction"] = f"logits restricted to the {K} benchmark classes among the head's {n_head}"
        r["oa"], r["macc"] = accuracy_report(out["probs"][:, cols].argmax(1), labels, K)
        r["oa_unrestricted"] = float((out["probs"].argmax(1) == np.array(cols)[labels]).mean() * 100)
        if votes > 1:
            r["oa_vote"], r["macc_vote"] = accuracy_report(out["vote:probs"][:, cols].argmax(1), labels, K)
            r["vote_precision"] = "bf16" if cpu_has_fast_bf16() and backend is None else "fp32"  # the extra copies (encode)
    else:
        r["restriction"] = "no classification head: zero-shot only"
    if "embedding" in out:  # labels-only models (official fine-tune checkpoints) have no zero-shot
        tower, templates, as_words = text_side(ckpt, teacher)
        w = zero_shot_weights(tower, words, templates, as_words).numpy()
        r["zero_shot_oa"], r["zero_shot_macc"] = accuracy_report((out["embedding"] @ w.T).argmax(1), labels, K)
    return r


def load_labelled(path, n_points: int = 1024, up_axis: str = "z") -> PackedSet:
    """A labelled set for retrieval: a packed .npz, or a folder of <class>/**/<shape file>
    (any format the server reads; meshes sampled, everything normalised, `up_axis` rotated to z)."""
    path = Path(path)
    if path.is_file():
        s = load_packed(path)
        s.points = _take_points(s.points, n_points)
        return s
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: neither a packed .npz nor a folder")
    from recon_serve.data.readers import SUPPORTED_EXTS, load_points
    from recon_serve.geometry.normalise import normalise
    from recon_serve.geometry.preprocess import up_rotation

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    files = [(c, f) for c in classes for f in sorted((path / c).rglob("*")) if f.suffix.lower() in SUPPORTED_EXTS]
    if not files:
        raise ValueError(f"{path}: no shape files under <class>/ sub-folders")
    rot = up_rotation(up_axis).astype(np.float32)
    pts = np.stack([normalise(load_points(f, n_points) @ rot.T) for _, f in files]).astype(np.float32)
    labels = np.array([classes.index(c) for c, _ in files])
    ids = np.array([str(f.relative_to(path)) for _, f in files])
    return PackedSet(pts, labels, classes, np.full(len(files), ""), ids, path.name)


def _take_points(points: np.ndarray, n: int) -> np.ndarray:
    """n points per shape: the first n of a uniformly sampled cloud are a uniform sample (fewer: repeated)."""
    if points.shape[1] >= n:
        return np.ascontiguousarray(points[:, :n])
    reps = -(-n // points.shape[1])
    return np.ascontiguousarray(np.tile(points, (1, reps, 1))[:, :n])


def evaluate_retrieval(model, data: PackedSet, shape_kinds=(), d2: bool = True, teacher=None, ckpt=None) -> dict:
    """Shape-to-shape retrieval (shape embedding; text embedding for comparison; D2), text search
    P@10 with one prompt-ensemble query per class, and zero-shot top-1 over the set's class words."""
    present = sorted(set(data.labels.tolist()))
    words = [canonical(data.class_names[c]) for c in present]
    labels = np.searchsorted(present, data.labels)
    out = encode(model, data.points, shape_kinds=tuple(shape_kinds))
    r = {"n": int(len(labels)), "classes": len(present), "shape_embedding": model.cfg.shape_embedding}
    r.update(retrieval_measures(out["shape_embedding"] @ out["shape_embedding"].T, labels))
    r["candidates"] = {k: retrieval_measures(out[f"shape:{k}"] @ out[f"shape:{k}"].T, labels) for k in shape_kinds}
    r["chance"] = 1.0 / len(present)
    if "embedding" in out:  # text search and zero-shot need the text-aligned embedding
        r["text_embedding"] = retrieval_measures(out["embedding"] @ out["embedding"].T, labels)
        tower, templates, as_words = text_side(ckpt or {}, teacher)
        w = zero_shot_weights(tower, words, templates, as_words).numpy()
        sims = out["embedding"] @ w.T  # [N, C]
        r["p_at_10"] = precision_at_k(sims.T, np.arange(len(present)), labels, 10)
        r["top1"] = float((sims.argmax(1) == labels).mean())
    if d2:
        r["d2"] = retrieval_measures(l1_similarity(d2_descriptor(data.points)), labels)
    return r
