"""PSB retrieval measures and the D2 baseline against hand-computed cases."""
import numpy as np

from recon_serve.retrieval import d2_descriptor, l1_similarity, precision_at_k, retrieval_measures


def test_perfect_and_hand_computed_rankings():
    labels = np.array([0, 0, 1, 1])
    perfect = (labels[:, None] == labels[None]).astype(float)
    m = retrieval_measures(perfect, labels)
    assert m["nn"] == m["first_tier"] == m["second_tier"] == m["dcg"] == m["map"] == 1.0
    # rankings (self excluded, though its score is the highest): 0 -> [2, 1, 3], 1 -> [0, 2, 3],
    # 2 -> [3, 0, 1], 3 -> [0, 1, 2]; relevant at ranks 2, 1, 1 and 3
    s = np.array([[100, 2, 3, 1], [3, 100, 2, 1], [2, 1, 100, 3], [3, 2, 1, 100]], dtype=float)
    m = retrieval_measures(s, labels)
    assert m["nn"] == 0.5 and m["first_tier"] == 0.5 and m["second_tier"] == 0.75
    assert np.isclose(m["dcg"], (1 + 1 + 1 + 1 / np.log2(3)) / 4)
    assert np.isclose(m["map"], (1 / 2 + 1 + 1 + 1 / 3) / 4)


def test_singleton_classes_are_skipped_and_precision_at_k():
    labels = np.array([0, 0, 1])
    m = retrieval_measures(np.eye(3) + 0.5, labels)
    assert m["queries"] == 2
    scores = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.9]])
    assert precision_at_k(scores, [0, 1], labels, k=2) == (1.0 + 0.5) / 2


def test_d2_is_scale_invariant_and_tells_a_sphere_from_a_line():
    rng = np.random.default_rng(0)
    sphere = rng.normal(size=(1, 600, 3))
    sphere /= np.linalg.norm(sphere, axis=-1, keepdims=True)
    line = np.zeros((1, 600, 3))
    line[0, :, 0] = rng.uniform(-1, 1, 600)
    d = d2_descriptor(np.concatenate([sphere, 3.0 * sphere, line]))
    assert np.allclose(d.sum(1), 1)
    sim = l1_similarity(d)
    assert sim[0, 1] > -0.15 and sim[0, 2] < sim[0, 1] - 0.3
