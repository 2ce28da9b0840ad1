"""Calibration (temperature scaling, ECE) and abstention thresholds, in NumPy + SciPy only.

No torch import anywhere in this package: the serving side (onnxruntime + NumPy) uses it as is.
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
