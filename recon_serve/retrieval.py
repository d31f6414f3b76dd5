"""Retrieval measures as the shape-retrieval field reports them, and the D2 baseline.

Princeton Shape Benchmark measures (Shilane et al., SMI 2004), leave-one-out over a labelled set:
each shape queries all the others (itself excluded); for a query of class C with |C| members,
- nearest neighbour: the best match is of class C;
- first tier / second tier: share of the |C|-1 relevant shapes among the top |C|-1 / 2(|C|-1);
- DCG: discounted cumulative gain over the whole ranking (gain 1 per relevant shape at rank i,
  divided by log2(i) from rank 2 on), normalised by the ideal ranking's DCG.
Queries whose class has no other member are skipped, as in the benchmark. `mean_average_precision`
is the ModelNet retrieval figure (MVCNN's protocol). D2 (Osada et al., 2002) is the histogram of
distances between random point pairs, compared by L1: training-free, rotation invariant.
"""
from __future__ import annotations

import numpy as np


def _ranking(similarity: np.ndarray) -> np.ndarray:
    """[N, N-1] indices of every other item, best first (self excluded)."""
    s = np.array(similarity, dtype=np.float64, copy=True)
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")
    return order[:, :-1]  # self (at -inf) is last


def retrieval_measures(similarity: np.ndarray, labels) -> dict:
    """nn, first_tier, second_tier, dcg (fractions in [0, 1]) and mean average precision `map`,
    from an [N, N] similarity matrix (higher = more alike) and N labels."""
    labels = np.asarray(labels)
    order = _ranking(similarity)
    rel = labels[order] == labels[:, None]  # [N, N-1]
    n_rel = rel.sum(1)
    keep = n_rel > 0
    rel, n_rel = rel[keep], n_rel[keep]
    ranks = np.arange(1, rel.shape[1] + 1)
    disc = np.where(ranks == 1, 1.0, 1.0 / np.log2(np.maximum(ranks, 2)))
    dcg = (rel * disc).sum(1)
    ideal = np.cumsum(disc)[n_rel - 1]
    csum = np.cumsum(rel, 1)
    first = csum[np.arange(len(rel)), n_rel - 1] / n_rel
    second = csum[np.arange(len(rel)), np.minimum(2 * n_rel, rel.shape[1]) - 1] / n_rel
    ap = (rel * csum / ranks).sum(1) / n_rel
    return {"nn": float(rel[:, 0].mean()), "first_tier": float(first.mean()), "second_tier": float(second.mean()),
            "dcg": float((dcg / ideal).mean()), "map": float(ap.mean()), "queries": int(keep.sum())}


def precision_at_k(scores: np.ndarray, query_labels, item_labels, k: int = 10) -> float:
    """Mean share of each query's top k items (by score [Q, N]) that carry the query's label."""
    top = np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :k]
    return float((np.asarray(item_labels)[top] == np.asarray(query_labels)[:, None]).mean())


def d2_descriptor(points: np.ndarray, bins: int = 64, n: int = 512, seed: int = 0) -> np.ndarray:
    """D2 shape distribution of clouds [B, P, 3]: histogram of all pairwise distances among n random
    points, distances divided by their mean (scale invariance), over [0, 3); rows sum to 1."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(points), bins))
    iu = np.triu_indices(min(n, points.shape[1]), 1)
    for i, p in enumerate(points):
        sub = p[rng.choice(len(p), min(n, len(p)), replace=False)].astype(np.float64)
        d = np.sqrt(((sub[:, None] - sub[None]) ** 2).sum(-1))[iu]
        h, _ = np.histogram(d / max(d.mean(), 1e-12), bins=bins, range=(0.0, 3.0))
        out[i] = h / max(h.sum(), 1)
    return out


def l1_similarity(descriptors: np.ndarray) -> np.ndarray:
    """[N, N] negative L1 distances between histogram rows (higher = more alike)."""
    d = np.asarray(descriptors, dtype=np.float64)
    out = np.empty((len(d), len(d)))
    for i in range(0, len(d), 64):  # row blocks keep memory at 64 x N x bins
        out[i:i + 64] = -np.abs(d[i:i + 64, None, :] - d[None, :, :]).sum(-1)
    return out
