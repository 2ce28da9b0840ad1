"""Probabilities from logits, in NumPy: the one softmax of fenlei (calibration, export, serving, benchmarks).

NumPy only, so the torch-free serving path can use it.
"""

from __future__ import annotations

import math

import numpy as np


def check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")
    return t


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``log softmax(logits / T)`` in float64, stable for large logits (max subtracted before ``exp``)."""
    z = np.asarray(logits, dtype=np.float64) / check_temperature(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / T)`` in float64."""
    return np.exp(log_softmax(logits, temperature))
