"""W&B sweep parameters as Optuna suggestions: one trial's CLI values from an Optuna trial.

The Optuna parameters are the search coordinates; the values handed to ``fit`` are computed from them with W&B's
own definitions (``fenlei.ops.sweep_config.sample_value``), so a value means the same under ``fenlei sweep`` and a
W&B agent:

=============================================  ================================================================
W&B                                            Optuna
=============================================  ================================================================
``value``                                      not suggested (a constant)
``values`` (categorical)                       ``suggest_categorical`` (``probabilities`` are not modelled)
``int_uniform``                                ``suggest_int(min, max)``
``uniform``                                    ``suggest_float(min, max)``
``log_uniform_values``, ``inv_log_uniform_values``  ``suggest_float(min, max, log=True)``
``log_uniform`` (exponents)                    ``suggest_float(e**min, e**max, log=True)``
``inv_log_uniform`` (exponents)                ``suggest_float(e**-max, e**-min, log=True)``
``q_*``                                        the distribution without ``q``, then rounded to a multiple of ``q``
``normal``, ``log_normal``, ``q_*normal``      a quantile ``suggest_float(0, 1)`` through the normal's inverse CDF
=============================================  ================================================================
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist
from typing import Any

from fenlei.ops.sweep_config import clean_value, infer_distribution, quantize

PRIMITIVE = (str, int, float, bool, type(None))
# Keeps the normal's inverse CDF finite at the ends of [0, 1].
QUANTILE_EDGE = 1e-6


def _categorical(trial: Any, name: str, values: list[Any]) -> Any:
    # Optuna's categorical choices must be plain scalars; a mapping (a loss with its class_path) is offered as its
    # JSON text and mapped back.
    if all(isinstance(v, PRIMITIVE) for v in values):
        return trial.suggest_categorical(name, values)
    texts = [json.dumps(v, sort_keys=True, ensure_ascii=False) for v in values]
    return values[texts.index(trial.suggest_categorical(name, texts))]


def _normal(trial: Any, name: str, spec: dict[str, Any]) -> float:
    quantile = trial.suggest_float(name, QUANTILE_EDGE, 1.0 - QUANTILE_EDGE)
    return NormalDist(spec.get("mu", 0.0), spec.get("sigma", 1.0)).inv_cdf(quantile)


def suggest_value(trial: Any, name: str, spec: dict[str, Any]) -> Any:
    """The CLI value of parameter ``name`` for ``trial`` (an ``optuna.Trial``)."""
    dist = infer_distribution(spec)
    if dist == "constant":
        return spec["value"]
    if dist == "categorical":
        return _categorical(trial, name, list(spec["values"]))
    low, high = spec.get("min"), spec.get("max")
    if dist == "int_uniform":
        return trial.suggest_int(name, low, high)
    base = dist[2:] if dist.startswith("q_") else dist
    if base == "uniform":
        value = trial.suggest_float(name, low, high)
    elif base in ("log_uniform_values", "inv_log_uniform_values"):
        value = trial.suggest_float(name, low, high, log=True)
    elif base == "log_uniform":
        value = trial.suggest_float(name, math.exp(low), math.exp(high), log=True)
    elif base == "inv_log_uniform":
        value = trial.suggest_float(name, math.exp(-high), math.exp(-low), log=True)
    elif base == "normal":
        value = _normal(trial, name, spec)
    elif base == "log_normal":
        value = math.exp(_normal(trial, name, spec))
    else:  # load_sweep has refused anything else
        raise ValueError(f"no Optuna mapping for distribution {dist!r}")
    return quantize(value, spec.get("q", 1)) if dist.startswith("q_") else value


def suggest_params(trial: Any, parameters: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every parameter's CLI value for ``trial``, in file order, float noise dropped (as the planned sweeps do)."""
    return {name: clean_value(suggest_value(trial, name, spec)) for name, spec in parameters.items()}


def ignored_probabilities(parameters: dict[str, dict[str, Any]]) -> list[str]:
    """Parameters whose ``probabilities`` an Optuna sampler cannot weight its choices by."""
    return [name for name, spec in parameters.items() if "probabilities" in spec]
