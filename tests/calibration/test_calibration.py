"""Calibration and abstention (NumPy only): temperature recovery, ECE, threshold selection, abstention output."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from fenlei.calibration import (
    abstention_mask,
    apply_abstention,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    nll,
    select_per_class_thresholds,
    select_threshold,
    softmax,
)
from fenlei.calibration.temperature import T_MIN
from fenlei.calibration.thresholds import ThresholdResult
from tests.conftest import REPO_ROOT


def _sample_labels(z: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """Draw one label per row from softmax(z / T) (inverse-CDF sampling)."""
    p = softmax(z, temperature)
    u = rng.random((len(z), 1))
    return np.minimum((p.cumsum(axis=1) < u).sum(axis=1), z.shape[1] - 1)


def _synthetic(t_true: float, n: int = 20_000, c: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3.0, size=(n, c))
    return z, _sample_labels(z, t_true, rng)


# ---- temperature scaling ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t_true", [0.5, 2.0, 3.0])
def test_fit_temperature_recovers_known_temperature(t_true: float) -> None:
    z, y = _synthetic(t_true, seed=int(t_true * 10))
    t_fit = fit_temperature(z, y)
    assert abs(t_fit - t_true) / t_true < 0.05, t_fit
    # The fitted T is the NLL minimum: nudging it either way does not help, and it beats T = 1.
    assert nll(z, y, t_fit) <= nll(z, y, 1.0)
    assert nll(z, y, t_fit) <= min(nll(z, y, t_fit * 1.02), nll(z, y, t_fit / 1.02))


def test_calibrate_report_lowers_nll_and_ece_on_overconfident_logits() -> None:
    # Labels come from softmax(z / 3): the raw logits are far too confident.
    z, y = _synthetic(3.0, seed=1)
    report = calibrate(z, y)
    assert report.n == len(y)
    assert report.nll_after <= report.nll_before
    assert report.ece_before > 0.1
    assert report.ece_after < 0.03
    assert report.ece_after < report.ece_before / 3
    assert set(report.to_dict()) == {"temperature", "nll_before", "nll_after", "ece_before", "ece_after", "n", "n_bins"}


def test_fit_temperature_is_scale_equivariant_and_stable_for_huge_logits() -> None:
    z, y = _synthetic(2.0, n=4000, seed=2)
    t = fit_temperature(z, y)
    # Scaling logits by s scales the optimal temperature by s; 1000x logits must not overflow.
    assert fit_temperature(z * 1000.0, y) == pytest.approx(t * 1000.0, rel=1e-3)
    assert math.isfinite(nll(z * 1000.0, y, 1.0))


def test_fit_temperature_degenerate_data_stays_finite() -> None:
    rng = np.random.default_rng(6)
    z = rng.normal(size=(500, 4))
    # Perfectly separable: NLL keeps falling as T -> 0, so the fit stops at the lower limit.
    t_sep = fit_temperature(z, z.argmax(axis=1))
    assert t_sep == pytest.approx(T_MIN, rel=1e-2)
    # Labels independent of the logits: the best model is uniform, i.e. T -> inf.
    t_rand = fit_temperature(z, rng.integers(0, 4, size=500))
    assert t_rand > 10.0 and math.isfinite(t_rand)


def test_softmax_and_nll_match_direct_formula() -> None:
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = np.array([2, 0])
    p = np.exp(z / 2) / np.exp(z / 2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax(z, 2.0), p)
    assert nll(z, y, 2.0) == pytest.approx(-np.log(p[[0, 1], y]).mean())


@pytest.mark.parametrize(
    "logits,labels",
    [
        (np.zeros((3,)), np.array([0, 1, 0])),  # not 2-D
        (np.zeros((2, 3)), np.array([0, 3])),  # label out of range
        (np.zeros((2, 3)), np.array([0.0, 1.0])),  # float labels
        (np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([0, 1])),  # NaN
    ],
)
def test_fit_temperature_rejects_bad_input(logits: np.ndarray, labels: np.ndarray) -> None:
    with pytest.raises(ValueError):
        fit_temperature(logits, labels)


def test_nonpositive_temperature_rejected() -> None:
    with pytest.raises(ValueError):
        softmax(np.zeros((1, 2)), 0.0)


# ---- ECE ----------------------------------------------------------------------------------------------------------


def test_ece_near_zero_for_perfectly_calibrated_set() -> None:
    # Labels drawn from the model's own probabilities: calibrated by construction, ECE only sampling noise.
    z, y = _synthetic(1.0, n=50_000, seed=3)
    assert expected_calibration_error(softmax(z), y) < 0.01


def test_ece_hand_computed() -> None:
    # Two examples in bin [0.6, 0.8) with mean conf 0.7 and acc 0.5; one in the last bin with conf 0.9, correct.
    probs = np.array([[0.7, 0.3], [0.3, 0.7], [0.9, 0.1]])
    labels = np.array([0, 0, 0])
    expected = (2 / 3) * abs(0.5 - 0.7) + (1 / 3) * abs(1.0 - 0.9)
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(expected)


def test_ece_handles_confidence_exactly_one() -> None:
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = np.array([0, 1, 1])  # last one wrong with confidence 1.0
    # All three in the last bin: acc 2/3, conf 1.0.
    assert expected_calibration_error(probs, labels, n_bins=15) == pytest.approx(1 / 3)
    assert expected_calibration_error(probs[:2], labels[:2], n_bins=15) == 0.0


# ---- threshold selection ------------------------------------------------------------------------------------------

# Sorted by confidence: 0.9 ok, 0.8 ok, 0.7 wrong, 0.6 ok, 0.5 wrong, 0.4 wrong.
CONF = np.array([0.5, 0.9, 0.7, 0.4, 0.8, 0.6])
CORRECT = np.array([False, True, False, False, True, True])


def test_precision_target_picks_lowest_threshold_meeting_it() -> None:
    # Precision at thresholds 0.9, 0.8, 0.7, 0.6, 0.5, 0.4: 1, 1, 2/3, 3/4, 3/5, 1/2.
    # 0.75 is met at 0.9, 0.8 and again at 0.6 (non-monotone): the lowest, 0.6, gives the most coverage.
    r = select_threshold(CONF, CORRECT, target_precision=0.75)
    assert r == ThresholdResult(threshold=0.6, precision=0.75, coverage=4 / 6, reachable=True, n=6)
    r = select_threshold(CONF, CORRECT, target_precision=1.0)
    assert (r.threshold, r.precision, r.coverage, r.reachable) == (0.8, 1.0, 2 / 6, True)
    # 0.5 is met everywhere: accept all.
    assert select_threshold(CONF, CORRECT, target_precision=0.5).threshold == 0.4


def test_precision_target_exact_ratio_is_reached_despite_float_rounding() -> None:
    conf = np.linspace(1.0, 0.1, 10)
    correct = np.array([True] * 9 + [False])
    # 9/10 vs 0.9 in floating point must count as reached.
    r = select_threshold(conf, correct, target_precision=0.9)
    assert r.threshold == pytest.approx(0.1) and r.coverage == 1.0


def test_coverage_target_keeps_at_least_that_fraction() -> None:
    r = select_threshold(CONF, CORRECT, target_coverage=0.5)
    assert (r.threshold, r.coverage, r.precision, r.reachable) == (0.7, 0.5, 2 / 3, True)
    # 0.4 of 6 = 2.4 -> need 3 examples.
    assert select_threshold(CONF, CORRECT, target_coverage=0.4).threshold == 0.7
    assert select_threshold(CONF, CORRECT, target_coverage=1.0).threshold == 0.4
    assert select_threshold(np.linspace(1, 0.1, 10), np.ones(10, bool), target_coverage=0.3).coverage == 0.3


def test_unreachable_precision_abstains_on_everything_and_is_flagged() -> None:
    conf = np.array([0.9, 0.8, 0.7])
    r = select_threshold(conf, np.array([False, True, False]), target_precision=0.9)
    assert not r.reachable
    assert r.coverage == 0.0 and math.isnan(r.precision)
    assert r.threshold > 1.0  # above every probability, also on new data
    _, accepted = abstention_mask(np.array([[1.0, 0.0], [0.95, 0.05]]), r.threshold)
    assert not accepted.any()
    # Non-probability confidences above 1 are also rejected.
    assert select_threshold(np.array([5.0, 3.0]), np.array([False, False]), target_precision=0.5).threshold > 5.0


def test_ties_are_accepted_or_rejected_together() -> None:
    # Three examples tie at 0.8 (two right, one wrong) below a correct 0.9.
    conf = np.array([0.9, 0.8, 0.8, 0.8, 0.5])
    correct = np.array([True, True, False, True, True])
    # Precision 1.0 cannot take part of the tie: only 0.9 qualifies.
    r = select_threshold(conf, correct, target_precision=1.0)
    assert (r.threshold, r.coverage) == (0.9, 0.2)
    # Coverage 0.4 (2 examples) forces the whole tie in: achieved coverage overshoots to 0.8.
    r = select_threshold(conf, correct, target_coverage=0.4)
    assert (r.threshold, r.coverage, r.precision) == (0.8, 0.8, 0.75)


def test_select_threshold_argument_checks() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        select_threshold(CONF, CORRECT)
    with pytest.raises(ValueError, match="exactly one"):
        select_threshold(CONF, CORRECT, target_precision=0.9, target_coverage=0.5)
    with pytest.raises(ValueError):
        select_threshold(CONF, CORRECT, target_coverage=0.0)
    with pytest.raises(ValueError):
        select_threshold(np.array([]), np.array([], bool), target_precision=0.9)


def test_threshold_selection_on_random_data_meets_target() -> None:
    rng = np.random.default_rng(4)
    conf = rng.random(2000)
    correct = rng.random(2000) < conf  # accuracy grows with confidence
    r = select_threshold(conf, correct, target_precision=0.9)
    accepted = conf >= r.threshold
    assert r.reachable and correct[accepted].mean() >= 0.9
    assert accepted.mean() == pytest.approx(r.coverage)
    # Lowest qualifying threshold: no lower candidate meets the target.
    for t in conf[conf < r.threshold]:
        assert correct[conf >= t].mean() < 0.9


# ---- per-class thresholds -----------------------------------------------------------------------------------------


def test_per_class_thresholds_with_fallback() -> None:
    # Class 0: 4 predictions, precision 1 only at >= 0.8. Class 1: 4 predictions all right. Class 2: 1 prediction.
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.65, 0.55, 0.52, 0.51, 0.99])
    pred = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])
    correct = np.array([True, True, False, True, True, True, True, True, False])
    out = select_per_class_thresholds(conf, pred, correct, num_classes=4, target_precision=1.0, min_support=3)
    assert out.thresholds.shape == (4,)
    assert out.thresholds[0] == 0.8
    assert out.thresholds[1] == 0.51
    # Classes 2 (one prediction) and 3 (none) fall back to the global threshold.
    assert out.fallback.tolist() == [False, False, True, True]
    assert out.support.tolist() == [4, 4, 1, 0]
    assert out.per_class[2] is None and out.per_class[3] is None
    g = select_threshold(conf, correct, target_precision=1.0)
    assert out.global_result == g
    assert out.thresholds[2] == out.thresholds[3] == g.threshold


def test_per_class_unreachable_class_abstains_on_that_class() -> None:
    conf = np.array([0.9, 0.8, 0.7, 0.9, 0.8, 0.7])
    pred = np.array([0, 0, 0, 1, 1, 1])
    correct = np.array([True, True, True, False, False, True])
    out = select_per_class_thresholds(conf, pred, correct, num_classes=2, target_precision=0.9, min_support=2)
    assert out.thresholds[0] == 0.7
    assert out.per_class[1] is not None and not out.per_class[1].reachable
    assert out.thresholds[1] > 1.0


# ---- applying thresholds ------------------------------------------------------------------------------------------

PROBS = np.array(
    [
        [0.7, 0.2, 0.1],  # class 0, conf 0.7
        [0.1, 0.5, 0.4],  # class 1, conf 0.5
        [0.05, 0.05, 0.9],  # class 2, conf 0.9
        [0.6, 0.3, 0.1],  # class 0, conf 0.6
    ]
)
NAMES = ["billing", "login", "shipping"]


def test_apply_abstention_global_threshold() -> None:
    assert apply_abstention(PROBS, 0.6, label_names=NAMES) == ["billing", "uncertain", "shipping", "billing"]
    # Exactly at the threshold is accepted (conf >= threshold), consistent with select_threshold.
    assert apply_abstention(PROBS, 0.7, label_names=NAMES) == ["billing", "uncertain", "shipping", "uncertain"]
    assert apply_abstention(PROBS, 0.0) == ["0", "1", "2", "0"]
    assert apply_abstention(PROBS, 0.95, uncertain_label="?") == ["?"] * 4


def test_apply_abstention_per_class_thresholds_index_by_predicted_class() -> None:
    th = np.array([0.65, 0.4, 0.95])
    assert apply_abstention(PROBS, th, label_names=NAMES) == ["billing", "login", "uncertain", "uncertain"]
    pred, accepted = abstention_mask(PROBS, th)
    assert pred.tolist() == [0, 1, 2, 0] and accepted.tolist() == [True, True, False, False]
    # One example as a 1-D vector.
    assert apply_abstention(PROBS[2], [0.5, 0.5, 0.5], label_names=NAMES) == ["shipping"]


def test_apply_abstention_argument_checks() -> None:
    with pytest.raises(ValueError, match="thresholds"):
        apply_abstention(PROBS, [0.5, 0.5])
    with pytest.raises(ValueError, match="label_names"):
        apply_abstention(PROBS, 0.5, label_names=["a", "b"])
    with pytest.raises(ValueError, match="class name"):
        apply_abstention(PROBS, 0.5, label_names=["a", "uncertain", "c"])


def test_end_to_end_threshold_chosen_on_calibrated_validation_probs() -> None:
    z, y = _synthetic(2.0, n=6000, seed=5)
    zv, yv, zt, yt = z[:3000], y[:3000], z[3000:], y[3000:]
    t = fit_temperature(zv, yv)
    pv = softmax(zv, t)
    r = select_threshold(pv.max(axis=1), pv.argmax(axis=1) == yv, target_precision=0.9)
    assert r.reachable
    pt = softmax(zt, t)
    pred, accepted = abstention_mask(pt, r.threshold)
    # Held-out precision close to the target (sampling noise only).
    assert (pred[accepted] == yt[accepted]).mean() > 0.87
    assert accepted.mean() == pytest.approx(r.coverage, abs=0.05)


# ---- serving constraint -------------------------------------------------------------------------------------------


def test_import_does_not_pull_in_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import fenlei.calibration, sys; print('torch' in sys.modules)"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == "False"
