"""Numeric targets -> ordinal bins (fitted on train only) and the metrics to judge bin predictions.

Torch-free on purpose (NumPy + scikit-learn): binning is data preparation, usable from scripts and tests
without the training stack. ``build_binner`` turns a YAML-style dict into a binner, e.g.
``{"scheme": "quantile", "num_bins": 4}`` or ``{"scheme": "kmeans", "k_range": [2, 8], "log1p": true}``.
"""

from __future__ import annotations

import inspect
from typing import Any

from labeling.binning import (
    Binner,
    BinningReport,
    EdgeBinner,
    EqualWidthBinner,
    KMeansBinner,
    ManualBinner,
    OutlierFilter,
    QuantileBinner,
    balance_score,
    binner_from_dict,
)
from labeling.metrics import (
    constant_predictor_mae,
    exact_bin_accuracy,
    mae_in_bins,
    ordinal_decode,
    quadratic_weighted_kappa,
    target_mae,
)

SCHEMES: dict[str, type[Binner]] = {
    "equal_width": EqualWidthBinner,
    "quantile": QuantileBinner,
    "manual": ManualBinner,
    "kmeans": KMeansBinner,
}


def build_binner(spec: dict[str, Any]) -> Binner:
    """Make an (unfitted) binner from a config dict: ``scheme`` plus that scheme's constructor arguments.

    Raises ValueError naming the known schemes / allowed fields, so a typo in YAML fails loudly at startup
    instead of silently falling back to a default.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"binning spec must be a dict, got {type(spec).__name__}")
    if "scheme" not in spec:
        raise ValueError(f"binning spec needs a 'scheme' (one of {sorted(SCHEMES)}), got keys {sorted(spec)}")
    scheme = spec["scheme"]
    if scheme not in SCHEMES:
        raise ValueError(f"unknown binning scheme {scheme!r}; known: {sorted(SCHEMES)}")
    cls = SCHEMES[scheme]
    parameters = inspect.signature(cls.__init__).parameters
    allowed = [name for name in parameters if name != "self"]
    kwargs = {k: v for k, v in spec.items() if k != "scheme"}
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} for binning scheme {scheme!r}; allowed: {allowed}")
    missing = [name for name in allowed if parameters[name].default is inspect.Parameter.empty and name not in kwargs]
    if missing:
        raise ValueError(f"binning scheme {scheme!r} needs field(s) {missing}")
    return cls(**kwargs)


__all__ = [
    "SCHEMES",
    "Binner",
    "BinningReport",
    "EdgeBinner",
    "EqualWidthBinner",
    "KMeansBinner",
    "ManualBinner",
    "OutlierFilter",
    "QuantileBinner",
    "balance_score",
    "binner_from_dict",
    "build_binner",
    "constant_predictor_mae",
    "exact_bin_accuracy",
    "mae_in_bins",
    "ordinal_decode",
    "quadratic_weighted_kappa",
    "target_mae",
]
