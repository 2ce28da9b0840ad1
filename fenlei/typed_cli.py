"""Typed subcommands: a function's (or dataclass's) signature and docstrings are its command line, as in litgpt.

    def main(argv):                       # in a command module
        return run_typed(export, argv, prog="fenlei export")

``run_typed`` parses ``argv`` with jsonargparse into the signature of ``component`` (a function, a class, or a
dict of them for sub-subcommands such as ``fenlei data dedup``), calls it and returns its exit status. Every
command gets ``--config FILE`` (YAML with the same keys), ``--print_config``, and ``--help`` that shows each
option's type, default and the text of its docstring (Google-style ``Args:`` or attribute docstrings).

The command line keeps the spellings fenlei's argparse commands have always had, rewritten into the one-token
forms jsonargparse parses (:func:`normalize_argv`):

- booleans: ``--force`` means ``--force true``, ``--no-force`` / ``--no_force`` mean ``--force false``
  (jsonargparse alone wants a value after a bool option);
- lists: ``--fields text title`` means ``--fields '["text", "title"]'`` (jsonargparse alone takes one word);
- positionals (``positional=True``): the required parameters before the signature's ``*`` are positional, as in
  ``fenlei sweep FILE``; a list one takes every remaining word (``fenlei compare RUN...``); keyword-only
  parameters stay ``--options``;
- pass-through (``rest="extra_args"``): every word after ``--`` is appended to that list parameter untouched, as in
  ``fenlei sweep FILE -- --config configs/debug/limit_batches.yaml``.

Imports nothing heavy (jsonargparse only), so torch-free commands stay torch-free.
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union, get_args, get_origin

BOOL_VALUES = {"true", "false", "True", "False", "yes", "no", "1", "0"}
NO_VALUE_OPTIONS = {"-h", "--help", "--print_config"}  # --print_config takes its flags only as --print_config=...
NEGATIVE_NUMBER = re.compile(r"^-\d|^-\.\d")
Component = Union[Callable[..., Any], Mapping[str, Callable[..., Any]]]


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


def _list_annotation(annotation: Any) -> bool:
    """list[...], Sequence[...] or tuple[...] (also inside Optional): a parameter given as several words."""
    if get_origin(annotation) is Union:
        return any(_list_annotation(a) for a in get_args(annotation) if a is not type(None))
    return get_origin(annotation) in (list, tuple, collections.abc.Sequence) or annotation in (list, tuple)


def _parameters(component: Any) -> list[inspect.Parameter]:
    target = component.__init__ if inspect.isclass(component) else component
    try:
        signature = inspect.signature(target, eval_str=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: the raw ones (string lists are not detected)
        signature = inspect.signature(target)
    return [p for p in signature.parameters.values() if p.name != "self"]


def list_options(component: Any) -> set[str]:
    """Names of the list parameters of ``component`` (given as ``--name A B C`` on the command line)."""
    return {p.name for p in _parameters(component) if _list_annotation(p.annotation)}


def positional_parameters(component: Any) -> list[inspect.Parameter]:
    """The parameters jsonargparse makes positional under ``as_positional``: required and before the ``*``."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p in _parameters(component) if p.kind in kinds and p.default is p.empty]


def _is_option(token: str) -> bool:
    # "-1" and "-0.5" are values (a layer index, a negative number), not options.
    return token.startswith("-") and not NEGATIVE_NUMBER.match(token)


def words_value(words: Sequence[str]) -> str:
    """Several words as one jsonargparse list value; a single word that already is a list (``[a, b]``) stays."""
    if len(words) == 1 and words[0].lstrip().startswith("["):
        return words[0]
    # JSON strings keep each word verbatim ("1", "null", "a: b"); jsonargparse casts them to the element type.
    return json.dumps(list(words), ensure_ascii=False)


class _CommandLine:
    """One component's words, read option by option into the one-token forms jsonargparse parses."""

    def __init__(self, bools: set[str], lists: set[str]) -> None:
        self.bools, self.lists = bools, lists
        self.options: list[str] = []
        self.words: list[str] = []

    def read(self, tokens: Sequence[str]) -> None:
        i = 0
        while i < len(tokens):
            i = self._read_at(tokens, i)

    def _read_at(self, tokens: Sequence[str], i: int) -> int:
        """Read the option or word at ``i`` (with its values); returns the index of the next token."""
        token = tokens[i]
        if not _is_option(token):
            self.words.append(token)
            return i + 1
        name = token[2:] if token.startswith("--") else ""
        if not name or "=" in name or token in NO_VALUE_OPTIONS:
            self.options.append(token)
            return i + 1
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if name in self.bools:
            value = following if following in BOOL_VALUES else None
            self.options.append(f"--{name}={value or 'true'}")
            return i + (2 if value else 1)
        negated = next((name[3:] for prefix in ("no-", "no_") if name.startswith(prefix)), None)
        if negated in self.bools:
            self.options.append(f"--{negated}=false")
            return i + 1
        if name in self.lists:
            end = i + 1
            while end < len(tokens) and not _is_option(tokens[end]):
                end += 1
            self.options.append(f"--{name}={words_value(tokens[i + 1:end])}")
            return end
        if following is None or following.startswith("--"):
            self.options.append(token)  # the value is missing: left for jsonargparse to report
            return i + 1
        self.options.append(f"--{name}={following}")
        return i + 2


def _positional_words(parameters: Sequence[inspect.Parameter], words: Sequence[str]) -> list[str]:
    """One word per positional parameter; a list parameter at the end takes all the remaining words."""
    out, left = [], list(words)
    for index, parameter in enumerate(parameters):
        if not left:
            break
        if index == len(parameters) - 1 and _list_annotation(parameter.annotation):
            out.append(words_value(left))
            left = []
        else:
            out.append(left.pop(0))
    return out + left  # surplus words: jsonargparse reports them


def _normalize(component: Component, tokens: Sequence[str], positional: bool) -> list[str]:
    if isinstance(component, Mapping):  # the first word naming a sub-subcommand: what follows is its command line
        for i, token in enumerate(tokens):
            if token in component:
                return [*tokens[:i], token, *_normalize(component[token], tokens[i + 1:], positional)]
        return list(tokens)
    line = _CommandLine(bool_options(component), list_options(component))
    line.read(tokens)
    # Positionals first: --print_config takes an optional value and would swallow a word after it.
    words = _positional_words(positional_parameters(component), line.words) if positional else line.words
    return [*words, *line.options]


def normalize_argv(component: Component, argv: Sequence[str], positional: bool = False,
                   rest: Optional[str] = None) -> list[str]:
    """Rewrite fenlei's command-line spellings (see the module docstring) into what jsonargparse parses."""
    tokens, passthrough = list(argv), None
    if rest is not None and "--" in tokens:
        cut = tokens.index("--")
        tokens, passthrough = tokens[:cut], tokens[cut + 1:]
    out = _normalize(component, tokens, positional)
    if passthrough is not None:  # appended, so a --config file's list comes first and the command line wins
        out.append(f"--{rest}+={json.dumps(passthrough, ensure_ascii=False)}")
    return out


def _parser_class() -> type:
    """jsonargparse's parser, naming positionals by their parameter (``MODELS...``, not ``[ITEM,...]``) in help."""
    from jsonargparse import ArgumentParser

    class Parser(ArgumentParser):
        def add_argument(self, *args: Any, **kwargs: Any) -> Any:
            if len(args) == 1 and not args[0].startswith("-") and "metavar" not in kwargs:
                typehint = getattr(kwargs.get("action"), "_typehint", kwargs.get("type"))  # typed: an action
                kwargs["metavar"] = args[0].upper() + ("..." if _list_annotation(typehint) else "")
            return super().add_argument(*args, **kwargs)

    return Parser


def run_typed(component: Component, argv: Sequence[str], prog: str, description: Optional[str] = None,
              positional: bool = False, rest: Optional[str] = None) -> int:
    """Parse ``argv`` into ``component``'s signature, call it, and return its exit status (0 for None).

    ``positional``: required parameters before the signature's ``*`` are positional arguments. ``rest``: the name
    of a list parameter that receives every argument after ``--``.
    """
    from jsonargparse import CLI, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    args = normalize_argv(component, argv, positional, rest)
    kwargs: dict[str, Any] = {"description": description} if description else {}
    result = CLI(component, args=args, prog=prog, as_positional=positional, parser_class=_parser_class(), **kwargs)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def parse_typed(component: Callable[..., Any], argv: Sequence[str], prog: str) -> dict[str, Any]:
    """The keyword arguments ``argv`` gives ``component`` (a function), parsed and checked as :func:`run_typed`
    would, without calling it: for a caller that builds something else from the same options (the service's
    app factory reads ``fenlei serve``'s options from an environment variable)."""
    from jsonargparse import set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = _parser_class()(prog=prog)
    parser.add_function_arguments(component, as_group=False)
    cfg = parser.parse_args(normalize_argv(component, argv))
    return {k: v for k, v in cfg.as_dict().items() if k != "config" and not k.startswith("__")}
