"""Zero-shot probabilities that mean what they say: softmax temperature fitted on validation data.

Zero-shot scores are cosines between a shape's text embedding and label embeddings; a softmax over
cosine / T turns them into probabilities. A fixed T (0.01, CLIP's scale of 100) turns cosine gaps of
a few hundredths into near-certain answers; `fit_temperature` picks the T that minimises the
negative log-likelihood of the true labels on held-out shapes (Guo et al., 2017), and
`expected_calibration_error` measures the result.
"""
from __future__ import annotations

import numpy as np

DEFAULT_TEMPERATURE = 0.01  # CLIP's logit scale of 100: what an uncalibrated model uses


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def nll(similarity: np.ndarray, labels, temperature: float) -> float:
    p = softmax(np.asarray(similarity) / temperature)
    return float(-np.log(np.clip(p[np.arange(len(p)), np.asarray(labels)], 1e-300, None)).mean())


def fit_temperature(similarity: np.ndarray, labels, lo: float = 1e-3, hi: float = 1.0, steps: int = 200) -> float:
    """The T in [lo, hi] (log-spaced grid, then refined around the best) with the lowest NLL."""
    grid = np.geomspace(lo, hi, steps)
    best = grid[int(np.argmin([nll(similarity, labels, t) for t in grid]))]
    fine = np.geomspace(best / 1.05, best * 1.05, 41)
    return float(fine[int(np.argmin([nll(similarity, labels, t) for t in fine]))])


def expected_calibration_error(probs: np.ndarray, labels, bins: int = 15) -> float:
    """ECE: |accuracy - confidence| of the top answer, averaged over equal-width confidence bins
    weighted by their share of samples (in [0, 1])."""
    probs = np.asarray(probs)
    conf, pred = probs.max(1), probs.argmax(1)
    correct = pred == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)
