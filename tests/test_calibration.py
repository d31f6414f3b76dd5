"""Temperature fitting and expected calibration error on cases whose answer is known."""
import numpy as np

from recon_serve.calibration import DEFAULT_TEMPERATURE, expected_calibration_error, fit_temperature, softmax


def test_ece_of_hand_made_cases():
    labels = np.array([0, 0, 1, 1])
    right = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(right, labels) == 0.0
    coin = np.array([[0.9, 0.1]] * 4)  # 90 % sure, right half the time
    assert abs(expected_calibration_error(coin, labels) - 0.4) < 1e-12


def test_fitted_temperature_recovers_the_true_one_and_lowers_ece():
    """Scores drawn so that softmax(s / 0.05) is the true class distribution: a fixed scale of 100
    is overconfident; the fitted T is close to 0.05 and its ECE is far lower."""
    rng = np.random.default_rng(0)
    n, k, t_true = 4000, 10, 0.05
    sims = rng.normal(0.0, 0.05, size=(n, k))
    labels = np.array([rng.choice(k, p=p) for p in softmax(sims / t_true)])
    t = fit_temperature(sims[: n // 2], labels[: n // 2])
    assert abs(t - t_true) / t_true < 0.15
    before = expected_calibration_error(softmax(sims[n // 2:] / DEFAULT_TEMPERATURE), labels[n // 2:])
    after = expected_calibration_error(softmax(sims[n // 2:] / t), labels[n // 2:])
    assert after < 0.05 < before and after < before / 3
