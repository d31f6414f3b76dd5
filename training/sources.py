"""The registry of training sources and the splits every model choice is made on.

One record per labelled source in the data root (../shared/data): file, frame and point count.
`build_splits` merges their classes into one vocabulary and carves, seeded:
- `disjoint`: about 15 % of the PSB-train and SHREC'12 classes (merged classes found only there),
  every shape of them held out of *all* training, to measure zero-shot and retrieval on classes no
  stage has seen;
- `val`: 10 % per class of the remaining training shapes, for model choice;
- `train`: the rest; `test`: the sources' official test splits (ModelNet40), evaluated once.
ModelNet10 is not a training source: its shapes are the ten ModelNet40 classes' (same ids).
Procedural shapes (`procedural=N` per category) join the vocabulary, so a class they cover is never
held out, and the training split (pretraining uses them; fine-tuning keeps real shapes only).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon_serve.data.modelnet import data_root
from recon_serve.data.packed import PackedSet, load_packed
from recon_serve.data.vocabulary import Vocabulary
from recon_serve.geometry.preprocess import up_rotation


@dataclass(frozen=True)
class Source:
    name: str
    path: str  # relative to the data root
    up_axis: str  # 'z', 'y', or 'pca' (PCA-aligned by the source: kept as stored)
    licence: str


SOURCES = (
    Source("modelnet40", "modelnet40/modelnet40_1024.npz", "z", "ModelNet (Princeton): academic research only"),
    Source("psb", "psb/psb_train_2048.npz", "pca", "Princeton Shape Benchmark: academic research only"),
    Source("shrec12", "shrec12/shrec12_2048.npz", "pca", "SHREC'12 generic track: academic research only"),
    Source("shapenet", "shapenet10/shapenet10_2048.npz", "y", "ShapeNetCore: ShapeNet non-commercial terms"),
    Source("libero", "libero/libero_objects_2048.npz", "z", "LIBERO household assets: upstream licences"),
)
DISJOINT_SOURCES = ("psb", "shrec12")


@dataclass
class Shapes:
    """Shapes with merged-vocabulary labels; points keep their own count (1,024 or 2,048)."""

    points: list  # of [P,3] float32 arrays
    labels: np.ndarray
    sources: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx) -> "Shapes":
        idx = np.asarray(idx, dtype=np.int64)
        return Shapes([self.points[i] for i in idx], self.labels[idx], self.sources[idx], self.ids[idx])

    def packed(self, vocab: Vocabulary, n_points: int | None = None, name: str = "") -> PackedSet:
        """As one PackedSet with only the classes present (points cut to the smallest count)."""
        P = n_points or min(len(p) for p in self.points)
        used = sorted(set(self.labels.tolist()))
        remap = {c: i for i, c in enumerate(used)}
        return PackedSet(np.stack([p[:P] for p in self.points]), np.array([remap[c] for c in self.labels]),
                         [vocab.classes[c] for c in used], self.sources.astype(str), self.ids, name)


def load_source(src: Source, root=None) -> PackedSet:
    s = load_packed(Path(data_root(root)) / src.path, src.name)
    if src.up_axis in ("y",):
        s.points = (s.points @ up_rotation(src.up_axis).T.astype(np.float32)).astype(np.float32)
    return s


def build_vocabulary(sets: dict[str, PackedSet]) -> Vocabulary:
    vocab = Vocabulary()
    for name, s in sets.items():
        for c in s.class_names:
            vocab.add(name, c)
    return vocab


def procedural_set(per_category: int, seed: int = 0, n_points: int = 1024) -> PackedSet:
    """Generated training shapes (training/cli.procedural_clouds: z-up, normalised) as a packed set."""
    from training.cli import procedural_clouds

    pts, labels, names = procedural_clouds(per_category, [], n_points, seed)
    ids = np.array([f"{names[l]}/{i:05d}" for i, l in enumerate(labels)])
    return PackedSet(pts, labels, names, np.full(len(labels), "train"), ids, "procedural")


def build_splits(root=None, seed: int = 0, val_fraction: float = 0.1, disjoint_fraction: float = 0.15,
                 sources=SOURCES, min_disjoint_shapes: int = 4, procedural: int = 0):
    """(vocab, {'train','val','disjoint','test': Shapes}, disjoint class names)."""
    sets = {s.name: load_source(s, root) for s in sources}
    if procedural:
        sets["procedural"] = procedural_set(procedural, seed)
    vocab = build_vocabulary(sets)
    pts, lab, src, ids, is_test = [], [], [], [], []
    for name, s in sets.items():
        cls = [vocab.index(name, c) for c in s.class_names]
        for i in range(len(s)):
            pts.append(s.points[i])
            lab.append(cls[s.labels[i]])
            src.append(name)
            ids.append(f"{name}:{s.ids[i]}")
            is_test.append(s.split[i] == "test")
    allx = Shapes(pts, np.array(lab), np.array(src), np.array(ids))
    is_test = np.array(is_test)
    rng = np.random.default_rng(seed)
    # class-disjoint: merged classes whose every source is PSB or SHREC
    counts = np.bincount(allx.labels, minlength=len(vocab.classes))
    eligible = [c for c, n in enumerate(vocab.classes)
                if all(s in DISJOINT_SOURCES for s, _ in vocab.sources[n]) and counts[c] >= min_disjoint_shapes]
    n_source_classes = sum(len(sets[s].class_names) for s in DISJOINT_SOURCES if s in sets)
    target = round(disjoint_fraction * n_source_classes)
    held, n_held = [], 0
    for c in rng.permutation(eligible):
        if n_held >= target:
            break
        held.append(int(c))
        n_held += len(vocab.sources[vocab.classes[c]])
    in_disjoint = np.isin(allx.labels, held)
    train_pool = np.flatnonzero(~in_disjoint & ~is_test & (allx.sources != "procedural"))
    val = []
    for c in np.unique(allx.labels[train_pool]):
        members = train_pool[allx.labels[train_pool] == c]
        if len(members) >= 2:  # a class of one shape stays in training
            k = max(1, int(round(val_fraction * len(members))))
            val.extend(rng.choice(members, k, replace=False).tolist())
    val = np.array(sorted(val), dtype=np.int64)
    train = np.setdiff1d(np.flatnonzero(~in_disjoint & ~is_test), val)
    splits = {"train": allx.take(train), "val": allx.take(val), "disjoint": allx.take(np.flatnonzero(in_disjoint)),
              "test": allx.take(np.flatnonzero(is_test & ~in_disjoint))}
    return vocab, splits, [vocab.classes[c] for c in held]
