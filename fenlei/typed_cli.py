"""Typed subcommands: a function's (or dataclass's) signature and docstrings are its command line, as in litgpt.

    def main(argv):                       # in a command module
        return run_typed(export, argv, prog="fenlei export")

``run_typed`` parses ``argv`` with jsonargparse into the signature of ``component`` (a function, a class, or a
dict of them for sub-subcommands such as ``fenlei data dedup``), calls it and returns its exit status. Every
command gets ``--config FILE`` (YAML with the same keys), ``--print_config``, and ``--help`` that shows each
option's type, default and the text of its docstring (Google-style ``Args:`` or attribute docstrings).

Booleans keep the flag spellings fenlei's commands have always had: ``--force`` means ``--force true`` and
``--no-force`` / ``--no_force`` mean ``--force false`` (jsonargparse alone wants a value after a bool option).
Imports nothing heavy (jsonargparse only), so torch-free commands stay torch-free.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union, get_args, get_origin

BOOL_VALUES = {"true", "false", "True", "False", "yes", "no", "1", "0"}


def _is_bool(annotation: Any) -> bool:
    if annotation is bool or annotation == "bool":
        return True
    if get_origin(annotation) is Union:
        return any(a is bool for a in get_args(annotation)) and all(a in (bool, type(None)) for a in get_args(annotation))
    return annotation in ("Optional[bool]", "bool | None")


def bool_options(component: Any) -> set[str]:
    """Names of the bool parameters of ``component`` (a function or class; a dict of them: all of theirs)."""
    if isinstance(component, Mapping):
        return set().union(*(bool_options(c) for c in component.values()))
    target = component.__init__ if inspect.isclass(component) else component
    try:
        hints = inspect.get_annotations(target, eval_str=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the raw strings
        hints = getattr(target, "__annotations__", {})
    names = {name for name, annotation in hints.items() if name != "return" and _is_bool(annotation)}
    for name, annotation in hints.items():  # a dataclass parameter contributes its bool fields as options.name
        if inspect.isclass(annotation) and hasattr(annotation, "__dataclass_fields__"):
            names |= {f"{name}.{field}" for field in bool_options(annotation)}
    return names


def expand_bool_flags(argv: Sequence[str], names: set[str]) -> list[str]:
    """``--flag`` -> ``--flag=true`` and ``--no-flag`` / ``--no_flag`` -> ``--flag=false`` for bool options."""
    out: list[str] = []
    tokens = list(argv)
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if token.startswith("--") and "=" not in token:
            name = token[2:]
            if name in names and following not in BOOL_VALUES:
                out.append(f"--{name}=true")
                continue
            for prefix in ("no-", "no_"):
                if name.startswith(prefix) and name[len(prefix):] in names:
                    out.append(f"--{name[len(prefix):]}=false")
                    break
            else:
                out.append(token)
            continue
        out.append(token)
    return out


def run_typed(component: Union[Callable[..., Any], Mapping[str, Callable[..., Any]]], argv: Sequence[str],
              prog: str, description: Optional[str] = None) -> int:
    """Parse ``argv`` into ``component``'s signature, call it, and return its exit status (0 for None)."""
    from jsonargparse import CLI, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    args = expand_bool_flags(argv, bool_options(component))
    kwargs: dict[str, Any] = {"description": description} if description else {}
    result = CLI(component, args=args, prog=prog, as_positional=False, **kwargs)
    return int(result) if isinstance(result, (int, bool)) and not isinstance(result, bool) else 0
