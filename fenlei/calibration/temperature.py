"""Temperature scaling and expected calibration error, on NumPy arrays (SciPy finds the temperature).

Fitted once on validation logits at export time; the bundle stores one float, which the torch-free serving path
applies with ``fenlei.numerics.softmax`` (serving itself imports neither this module nor SciPy).

Temperature scaling (Guo et al., 2017) divides the logits by a single scalar ``T > 0`` chosen to minimise the
negative log-likelihood on held-out data. It never changes the argmax, so accuracy is untouched; only the
confidences move (``T > 1`` softens over-confident models, ``T < 1`` sharpens under-confident ones).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from fenlei.numerics import log_softmax, softmax

# Search range for T. The NLL is unimodal in log T (it is convex in 1/T), so a bounded 1-D search over log T is
# robust. The search starts on [1e-2, 1e2] and moves the bracket outward (by factors of 100) while the optimum sits
# on an edge, up to these hard limits; they only bind for degenerate data (e.g. perfectly separable logits, where
# NLL keeps falling as T -> 0, or labels independent of the logits, where it keeps falling as T -> inf).
T_MIN = 1e-4
T_MAX = 1e4
_START_BRACKET = (1e-2, 1e2)


def _check_logits_labels(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes/values and return float64 logits and int64 labels."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, C) with N >= 1 and C >= 2, got {z.shape}")
    if y.shape != (z.shape[0],):
        raise ValueError(f"labels must have shape ({z.shape[0]},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must lie in [0, {z.shape[1] - 1}], got range [{y.min()}, {y.max()}]")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or inf")
    return z, y.astype(np.int64)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T)`` (natural log)."""
    z, y = _check_logits_labels(logits, labels)
    logp = log_softmax(z, temperature)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature ``T`` in ``[T_MIN, T_MAX]`` minimising ``nll(logits, labels, T)``.

    Optimises over ``log T`` with bounded Brent search: working in log space makes the search scale-free (0.5 and 2
    are equally far from 1) and keeps ``T`` positive. NLL as a function of ``beta = 1/T`` is convex (log-sum-exp of
    a linear function minus a linear term), hence unimodal in ``log T``, so a 1-D bracketing search finds the global
    minimum. Fit on validation data only; fitting on test would leak.
    """
    z, y = _check_logits_labels(logits, labels)
    # Precompute once: the objective is evaluated ~30 times.
    z_true = z[np.arange(len(y)), y]

    def objective(log_t: float) -> float:
        s = z * math.exp(-log_t)
        m = s.max(axis=1)
        lse = m + np.log(np.exp(s - m[:, None]).sum(axis=1))
        return float((lse - z_true * math.exp(-log_t)).mean())

    lo, hi = math.log(_START_BRACKET[0]), math.log(_START_BRACKET[1])
    log_min, log_max, step, edge = math.log(T_MIN), math.log(T_MAX), math.log(100.0), 1e-3
    for _ in range(20):  # unimodality means the bracket only ever moves one way; the cap is a mere safeguard
        x = float(minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7}).x)
        # The optimum may lie outside the bracket (e.g. logits on a much larger scale than usual): slide the bracket
        # towards it, overlapping the old one, until the optimum is interior or a hard limit is reached.
        if x > hi - edge and hi < log_max:
            lo, hi = hi - 1.0, min(hi + step, log_max)
        elif x < lo + edge and lo > log_min:
            lo, hi = max(lo - step, log_min), lo + 1.0
        else:
            break
    t = float(math.exp(x))
    # Brent's bounded method never evaluates the endpoints exactly; T=1 is the "do nothing" baseline, so never
    # return a temperature that is worse than not calibrating (guards against a poor bracket on odd data).
    if objective(0.0) < objective(math.log(t)):
        return 1.0
    return t


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error (L1), equal-width bins over the max-softmax confidence.

    Definition: with confidence ``c_i = max_k p_ik``, prediction ``argmax_k p_ik`` and ``B_b`` the examples whose
    confidence falls in bin ``b``, ``ECE = sum_b (|B_b| / N) * |acc(B_b) - mean_conf(B_b)|``. Empty bins contribute 0.

    Bins are ``[b/n, (b+1)/n)``: bin index ``floor(c * n_bins)``, clamped to ``n_bins - 1`` so that a confidence
    of exactly 1.0 (common after float32 softmax of a saturated model) lands in the last bin instead of out of range.
    Note this is left-closed; Guo et al.'s reference code uses right-closed ``(lo, hi]`` bins, which differs only
    for confidences exactly on a bin edge.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"probs must have shape (N, C) with N >= 1, got {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must have shape ({p.shape[0]},), got {y.shape}")
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    n_bins = int(n_bins)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = np.clip(np.floor(conf * n_bins).astype(np.int64), 0, n_bins - 1)
    sum_conf = np.bincount(bins, weights=conf, minlength=n_bins)
    sum_correct = np.bincount(bins, weights=correct, minlength=n_bins)
    # sum_b |B_b|/N * |acc_b - conf_b| == sum_b |sum_correct_b - sum_conf_b| / N (no division by empty bins).
    return float(np.abs(sum_correct - sum_conf).sum() / len(y))


@dataclass(frozen=True)
class CalibrationReport:
    """Outcome of fitting a temperature on one (validation) set; ``asdict`` gives a JSON-ready dict."""

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    n: int
    n_bins: int = 15

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def calibrate(logits: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> CalibrationReport:
    """Fit a temperature on ``(logits, labels)`` and report NLL and ECE before (``T = 1``) and after."""
    z, y = _check_logits_labels(logits, labels)
    t = fit_temperature(z, y)
    return CalibrationReport(
        temperature=t,
        nll_before=nll(z, y, 1.0),
        nll_after=nll(z, y, t),
        ece_before=expected_calibration_error(softmax(z, 1.0), y, n_bins),
        ece_after=expected_calibration_error(softmax(z, t), y, n_bins),
        n=len(y),
        n_bins=n_bins,
    )
