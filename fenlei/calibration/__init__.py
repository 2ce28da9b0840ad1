"""Calibration (temperature scaling, ECE) and abstention thresholds, in NumPy + SciPy only.

No torch import anywhere in this package; export fits the calibration here, and serving applies the stored
temperature and thresholds without importing it (the serve extra has no SciPy).
"""

from fenlei.calibration.temperature import (
    CalibrationReport,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    log_softmax,
    nll,
    softmax,
)
from fenlei.calibration.thresholds import (
    PerClassThresholds,
    ThresholdResult,
    abstention_mask,
    apply_abstention,
    select_per_class_thresholds,
    select_threshold,
)

__all__ = [
    "CalibrationReport",
    "PerClassThresholds",
    "ThresholdResult",
    "abstention_mask",
    "apply_abstention",
    "calibrate",
    "expected_calibration_error",
    "fit_temperature",
    "log_softmax",
    "nll",
    "select_per_class_thresholds",
    "select_threshold",
    "softmax",
]
