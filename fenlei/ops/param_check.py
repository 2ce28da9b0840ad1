"""Check a sweep's parameter names against the ``fit`` command line before the first trial runs.

A misspelt key (``model.init_args.lrr``) would otherwise fail every trial, each after its imports and data loading.
The check parses the trials' base arguments once in this process with jsonargparse's ``--print_config`` (nothing
is built, no model loaded) and looks every dotted parameter name up in the resolved config, which lists every
argument of the chosen classes with its default.
"""

from __future__ import annotations

import difflib
import io
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from fenlei.ops.runs import OpsError


def _error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    return (errors[-1].split("error:", 1)[1].strip() if errors else lines[-1] if lines else "no message")


def resolved_config(args: list[str]) -> dict[str, Any]:
    """The config that ``fenlei ARGS`` (a ``fit``) resolves to; OpsError when the arguments do not parse."""
    import yaml

    from fenlei.training.cli import run_lightning_cli

    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            run_lightning_cli(args=[*args, "--print_config"])
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise OpsError(f"the trials' arguments do not parse ({_error_line(err.getvalue())})") from None
    except Exception as exc:  # noqa: BLE001 - a user error in a base config, named in the message
        raise OpsError(f"the trials' arguments do not parse ({_error_line(str(exc))})") from None
    data = yaml.safe_load(out.getvalue())
    return data if isinstance(data, dict) else {}


def dotted_keys(config: Any, prefix: str = "") -> set[str]:
    """Every dotted path of a nested mapping, inner nodes included (``model``, ``model.init_args``, ...)."""
    keys: set[str] = set()
    if isinstance(config, dict):
        for key, value in config.items():
            name = f"{prefix}{key}"
            keys.add(name)
            keys |= dotted_keys(value, f"{name}.")
    return keys


def unknown_parameters(names: list[str], config: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The names that are no key of ``config``, each with its closest key (if one is close)."""
    known = dotted_keys(config)
    return [(name, difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)) for name in names
            if name not in known]


def check_parameter_names(where: str, names: list[str], base_args: list[str]) -> None:
    """Raise a one-line OpsError naming the sweep file and the first parameter the ``fit`` parser does not have."""
    try:
        config = resolved_config(base_args)
    except OpsError as err:
        raise OpsError(f"{where}: {err}") from None
    bad = unknown_parameters(names, config)
    if bad:
        name, close = bad[0]
        hint = f"; did you mean {close[0]}?" if close else ""
        more = f" (and {len(bad) - 1} more: {', '.join(b[0] for b in bad[1:])})" if len(bad) > 1 else ""
        raise OpsError(f"{where}: parameters.{name}: no such argument of fit with this command's configs{hint}{more}")
