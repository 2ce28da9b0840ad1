"""W&B sweep files: validation, and the grid and random plans that ``fenlei sweep`` runs without a W&B server.

The file is W&B's own format (``wandb sweep FILE`` reads it unchanged)::

    program: cli.py
    method: grid                      # grid | random | bayes (bayes: Optuna's TPE, fenlei/ops/study.py)
    metric: {name: val/f1_macro_best, goal: maximize}
    early_terminate: {type: hyperband, min_iter: 1, eta: 3}   # optional: Optuna's HyperbandPruner
    command:                          # a block list: the flow form [${env}, ...] is not valid YAML
      - ${env}
      - ${interpreter}
      - ${program}
      - fit
      - --config
      - configs/quickstart.yaml
      - ${args}
    parameters:
      model.init_args.lr: {values: [5.0e-5, 1.0e-4]}
      model.init_args.dropout: {distribution: uniform, min: 0.0, max: 0.3}

Parameter names are dotted jsonargparse keys. W&B's nested form (``model: {parameters: {...}}``) is flattened to
the same dotted names.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fenlei.ops.runs import OpsError, load_yaml, params_hash

TOP_LEVEL_KEYS = {"program", "method", "metric", "parameters", "command", "name", "description", "project", "entity",
                  "early_terminate", "run_cap", "controller", "job", "image_uri"}
PARAM_KEYS = {"value", "values", "distribution", "min", "max", "mu", "sigma", "q", "probabilities", "parameters"}
DISTRIBUTIONS = {"constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values",
                 "q_log_uniform", "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values", "normal",
                 "q_normal", "log_normal", "q_log_normal"}
MACROS_DROPPED = {"${env}", "${interpreter}", "${program}"}
EARLY_TERMINATE_KEYS = {"type", "min_iter", "max_iter", "s", "eta", "strict"}


@dataclass(frozen=True)
class Hyperband:
    """W&B's ``early_terminate: {type: hyperband, ...}``. An *iteration* is one logged value of the sweep metric (one
    validation, normally one epoch). W&B's bands start at ``min_iter`` (``min_iter * eta**k``), or end below
    ``max_iter`` (``max_iter / eta**s ... max_iter / eta``)."""

    min_iter: int
    max_iter: Optional[int]
    eta: int


def parse_early_terminate(raw: Any, where: str) -> Optional[Hyperband]:
    """Validate ``early_terminate``; None where the file has none."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise OpsError(f"{where}: must be a mapping such as {{type: hyperband, min_iter: 1, eta: 3}}")
    unknown = set(raw) - EARLY_TERMINATE_KEYS
    if unknown:
        raise OpsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected some of "
                       f"{', '.join(sorted(EARLY_TERMINATE_KEYS))}")
    if raw.get("type") != "hyperband":
        raise OpsError(f"{where}.type: must be hyperband (the only type W&B has), got {raw.get('type')!r}")

    def whole(key: str, minimum: int) -> Optional[int]:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
            raise OpsError(f"{where}.{key}: must be a whole number of at least {minimum}, got {value!r}")
        return int(value)

    # Optuna's HyperbandPruner takes a whole reduction factor; W&B's default eta is 3.
    eta = whole("eta", 2) or 3
    min_iter, max_iter, s = whole("min_iter", 1), whole("max_iter", 1), whole("s", 0)
    if min_iter is None and max_iter is None:
        raise OpsError(f"{where}: hyperband needs min_iter (or max_iter with s)")
    if min_iter is None:
        min_iter = max(1, int(max_iter // eta ** (s or 0)))  # W&B's lowest band for max_iter and s
    if max_iter is not None and max_iter < min_iter:
        raise OpsError(f"{where}: max_iter ({max_iter}) is below min_iter ({min_iter})")
    return Hyperband(min_iter=min_iter, max_iter=max_iter, eta=eta)


@dataclass
class SweepSpec:
    """A validated sweep file."""

    path: Path
    name: str
    method: str
    metric: str
    goal: str
    parameters: dict[str, dict[str, Any]]
    base_args: list[str]
    run_cap: Optional[int] = None
    early_terminate: Optional[Hyperband] = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def searches(self) -> bool:
        """Whether the trials come from an Optuna study (bayes, or random with early termination) rather than a
        plan fixed in advance (grid, random)."""
        return self.method == "bayes" or (self.method == "random" and self.early_terminate is not None)


def _flatten_parameters(params: Any, where: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    if not isinstance(params, dict) or not params:
        raise OpsError(f"{where}: must be a non-empty mapping of parameter name -> spec")
    flat: dict[str, dict[str, Any]] = {}
    for key, spec in params.items():
        name = f"{prefix}{key}"
        if not isinstance(spec, dict):
            raise OpsError(f"{where}.{key}: must be a mapping such as {{values: [...]}} or {{value: x}}, "
                           f"got {type(spec).__name__}")
        if "parameters" in spec:  # W&B's nested form
            flat.update(_flatten_parameters(spec["parameters"], f"{where}.{key}.parameters", f"{name}."))
        else:
            flat[name] = spec
    return flat


def _number(spec: dict[str, Any], key: str, where: str) -> float:
    if key not in spec:
        raise OpsError(f"{where}: distribution {spec.get('distribution')!r} needs {key!r}")
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OpsError(f"{where}.{key}: must be a number, got {value!r}")
    return value


def infer_distribution(spec: dict[str, Any]) -> str:
    """W&B's defaults: ``value`` -> constant, ``values`` -> categorical, int min/max -> int_uniform, else uniform."""
    if "distribution" in spec:
        return spec["distribution"]
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int):
        return "int_uniform"
    return "uniform"


def _check_parameter(name: str, spec: dict[str, Any], method: str, where: str) -> None:
    unknown = set(spec) - PARAM_KEYS
    if unknown:
        raise OpsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected some of "
                       f"{', '.join(sorted(PARAM_KEYS - {'parameters'}))}")
    dist = infer_distribution(spec)
    if dist not in DISTRIBUTIONS:
        raise OpsError(f"{where}.distribution: unknown distribution {dist!r}")
    if "values" in spec and (not isinstance(spec["values"], list) or not spec["values"]):
        raise OpsError(f"{where}.values: must be a non-empty list")
    if dist == "categorical" and "values" not in spec:
        raise OpsError(f"{where}: distribution categorical needs 'values'")
    if dist == "constant" and "value" not in spec:
        raise OpsError(f"{where}: distribution constant needs 'value'")
    if "probabilities" in spec:
        probs = spec["probabilities"]
        if not isinstance(probs, list) or len(probs) != len(spec.get("values", [])) or \
                abs(sum(probs) - 1.0) > 1e-6 or any(p < 0 for p in probs):
            raise OpsError(f"{where}.probabilities: must be one non-negative number per value, summing to 1")
    if method == "grid" and dist not in ("constant", "categorical"):
        raise OpsError(f"{where}: method grid needs 'values' (or 'value'), not distribution {dist!r}")
    if dist in ("normal", "q_normal", "log_normal", "q_log_normal"):
        for key in ("mu", "sigma"):
            if key in spec:
                _number(spec, key, where)
    elif dist not in ("constant", "categorical"):
        low, high = _number(spec, "min", where), _number(spec, "max", where)
        if low > high:
            raise OpsError(f"{where}: min ({low}) is larger than max ({high})")
        if dist in ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values") and low <= 0:
            raise OpsError(f"{where}.min: {dist} needs min > 0, got {low}")
        if dist == "int_uniform" and not (isinstance(spec["min"], int) and isinstance(spec["max"], int)):
            raise OpsError(f"{where}: int_uniform needs integer min and max")
    if "q" in spec:
        _number(spec, "q", where)


def parse_command(command: Any, where: str) -> list[str]:
    """The fixed arguments of a sweep ``command`` (between ``${program}`` and ``${args}``), e.g.
    ``["fit", "--config", "configs/quickstart.yaml"]``."""
    if command is None:
        raise OpsError(f"{where}: missing; list ${{env}}, ${{interpreter}}, ${{program}}, fit, --config, BASE.yaml, "
                       "${args} (a block list, one item a line) so that trials run `fit` with a base config")
    if not isinstance(command, list) or not all(isinstance(c, (str, int, float)) for c in command):
        raise OpsError(f"{where}: must be a list of strings")
    items = [str(c) for c in command]
    if not items or items[-1] != "${args}":
        raise OpsError(f"{where}: must end with ${{args}} (the local runner appends the trial's --key=value "
                       "arguments there, as the W&B agent does)")
    base = [c for c in items[:-1] if c not in MACROS_DROPPED]
    for item in base:
        if item.startswith("${"):
            raise OpsError(f"{where}: macro {item} is not supported by the local runner")
    if not base or base[0] != "fit":
        raise OpsError(f"{where}: the arguments after ${{program}} must start with the subcommand fit, got {base[:1]}")
    return base


def load_sweep(path: str | Path, method_override: Optional[str] = None) -> SweepSpec:
    """Read and validate a sweep file; every error names the file and the offending key."""
    path = Path(path)
    raw = load_yaml(path, "sweep")
    where = str(path)
    unknown = set(raw) - TOP_LEVEL_KEYS
    if unknown:
        raise OpsError(f"{where}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    method = method_override or raw.get("method")
    if method not in ("grid", "random", "bayes"):
        raise OpsError(f"{where}: method: must be grid, random or bayes, got {method!r}")
    metric = raw.get("metric")
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str) or not metric["name"]:
        raise OpsError(f"{where}: metric: needs a name, e.g. {{name: val/f1_macro_best, goal: maximize}}")
    goal = metric.get("goal", "minimize")  # W&B's default
    if goal not in ("maximize", "minimize"):
        raise OpsError(f"{where}: metric.goal: must be maximize or minimize, got {goal!r}")
    parameters = _flatten_parameters(raw.get("parameters"), f"{where}: parameters")
    for name, spec in parameters.items():
        _check_parameter(name, spec, method, f"{where}: parameters.{name}")
    base_args = parse_command(raw.get("command"), f"{where}: command")
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or run_cap < 1):
        raise OpsError(f"{where}: run_cap: must be a positive integer")
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or "/" in name:
        raise OpsError(f"{where}: name: must be a string without '/'")
    early = parse_early_terminate(raw.get("early_terminate"), f"{where}: early_terminate")
    if early is not None and metric["name"].startswith("test/"):
        raise OpsError(f"{where}: early_terminate needs a metric logged during fit (val/...), not {metric['name']}")
    return SweepSpec(path=path, name=name, method=method, metric=metric["name"], goal=goal, parameters=parameters,
                     base_args=base_args, run_cap=run_cap, early_terminate=early, raw=raw)


# --------------------------------------------------------------------------------------------------- search


def grid_trials(parameters: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Cartesian product in file order; the last parameter varies fastest."""
    names = list(parameters)
    choices = [[spec["value"]] if "value" in spec else list(spec["values"]) for spec in parameters.values()]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices)]


def quantize(value: float, q: float) -> float:
    return round(value / q) * q


def sample_value(spec: dict[str, Any], rng: random.Random) -> Any:
    """One draw from a W&B parameter spec."""
    dist = infer_distribution(spec)
    if dist == "constant":
        return spec["value"]
    if dist == "categorical":
        values = spec["values"]
        if "probabilities" in spec:
            return rng.choices(values, weights=spec["probabilities"], k=1)[0]
        return values[rng.randrange(len(values))]
    q = spec.get("q", 1)
    low, high = spec.get("min"), spec.get("max")
    if dist == "int_uniform":
        return rng.randint(low, high)
    if dist == "uniform":
        return rng.uniform(low, high)
    if dist == "q_uniform":
        return quantize(rng.uniform(low, high), q)
    if dist == "log_uniform":  # min/max are natural-log exponents
        return math.exp(rng.uniform(low, high))
    if dist == "q_log_uniform":
        return quantize(math.exp(rng.uniform(low, high)), q)
    if dist == "log_uniform_values":  # min/max are the values themselves
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if dist == "q_log_uniform_values":
        return quantize(math.exp(rng.uniform(math.log(low), math.log(high))), q)
    if dist == "inv_log_uniform":
        return math.exp(-rng.uniform(low, high))
    if dist == "inv_log_uniform_values":
        return 1.0 / math.exp(rng.uniform(math.log(1.0 / high), math.log(1.0 / low)))
    mu, sigma = spec.get("mu", 0.0), spec.get("sigma", 1.0)
    if dist == "normal":
        return rng.gauss(mu, sigma)
    if dist == "q_normal":
        return quantize(rng.gauss(mu, sigma), q)
    if dist == "log_normal":
        return math.exp(rng.gauss(mu, sigma))
    if dist == "q_log_normal":
        return quantize(math.exp(rng.gauss(mu, sigma)), q)
    raise OpsError(f"unknown distribution {dist!r}")


def clean_value(value: Any) -> Any:
    # Drop float noise (1.0000000000000002e-05) so directory hashes and tables stay readable and stable.
    return float(f"{value:.6g}") if isinstance(value, float) else value


def random_trials(parameters: dict[str, dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` seeded draws; trial ``i`` is the same for every ``count`` > i (so a longer rerun extends a sweep)."""
    rng = random.Random(seed)
    return [{name: clean_value(sample_value(spec, rng)) for name, spec in parameters.items()} for _ in range(count)]


def trial_dir(root: Path, index: int, params: dict[str, Any]) -> Path:
    """``trial-003-<hash of the parameters>``: the same parameters at the same index get the same directory."""
    return root / f"trial-{index:03d}-{params_hash(params)}"


def trial_cap(spec: SweepSpec, count: Optional[int]) -> Optional[int]:
    """``--count`` or the file's ``run_cap``, the smaller of the two; None when neither is given."""
    caps = [c for c in (count, spec.run_cap) if c is not None]
    return min(caps) if caps else None


def plan_trials(spec: SweepSpec, count: Optional[int], seed: int) -> list[dict[str, Any]]:
    """The parameter sets to run, in order: the grid (cut to ``count``) or ``count`` random draws. A search
    (:attr:`SweepSpec.searches`) has no plan: its trials depend on the results so far."""
    if spec.searches:
        raise OpsError(f"{spec.path}: method {spec.method}"
                       f"{' with early_terminate' if spec.method == 'random' else ''} chooses its trials as it goes")
    cap = trial_cap(spec, count)
    if spec.method == "grid":
        trials = grid_trials(spec.parameters)
        return trials[:cap] if cap is not None else trials
    if cap is None:
        raise OpsError(f"{spec.path}: method {spec.method} needs --count (or run_cap in the file)")
    return random_trials(spec.parameters, cap, seed)
