"""What a raw label value is, and when a label column is too ambiguous to turn into classes silently (torch-free).

JSON gives labels types: ``1``, ``"1"``, ``1.0`` and ``true`` are different values that all look like one class.
Turned into strings as they come, ``1``, ``"1"`` and ``" 1"`` merge into one class while ``"1.0"``, ``"True"`` and
``"01"`` become classes of their own, and nobody is told. So by default a label column must hold one kind of value
(and must not spell one number two ways); ``label_type`` says how to read a mixed column instead: ``str`` keeps
every spelling as its own class (whitespace stripped, as always), ``int`` reads every label as an integer
(``"01"``, ``" 1"``, ``1.0`` -> ``1``).

The functions raise or return plain messages; the readers and DataModules put ``path:line`` in front and raise
their ``DataError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Literal, Optional

LabelType = Literal["str", "int"]
LABEL_TYPES: tuple[str, ...] = ("str", "int")

_INTEGER = re.compile(r"[+-]?\d+")


def label_kind(value: Any) -> str:
    """``boolean``, ``integer``, ``float`` or ``string``: the JSON type of a raw label (CSV cells are strings)."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "string"


def as_label(value: Any, label_type: Optional[str]) -> str:
    """The class name of a raw label under ``label_type`` (None or ``str``: as written, whitespace stripped).
    Raises ValueError for an ``int`` label that is no integer."""
    if label_type is None or label_type == "str":
        return str(value).strip()
    if label_type != "int":
        raise ValueError(f"label_type must be one of {', '.join(LABEL_TYPES)} or null, got {label_type!r}")
    if isinstance(value, bool):
        raise ValueError(f"label {value!r} is a boolean, not an integer (label_type: int)")
    if isinstance(value, int):
        return str(value)
    text = str(value).strip()
    if _INTEGER.fullmatch(text):
        return str(int(text))
    number = _number(text)
    if number is not None and number.is_integer():
        return str(int(number))
    raise ValueError(f"label {text!r} is not an integer (label_type: int)")


def _number(label: str) -> Optional[float]:
    try:
        number = float(label)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def _of(field: Optional[str]) -> str:
    return f" of field {field!r}" if field else ""


def ambiguous_labels(labels: Iterable[tuple[str, str, str]], field: Optional[str] = None) -> Optional[str]:
    """Why a label column is ambiguous, or None (checked when no ``label_type`` is configured).

    ``labels``: ``(kind, class name, "path:line")`` of every labelled record, train first. The message starts with
    the ``path:line`` of the first record that shows the ambiguity: a kind other than the first record's (``1``
    and ``"1"``), or one number spelled two ways, which would be two classes (``"1"`` and ``"01"`` or ``"1.0"``).
    ``field``: named in the message where a DataModule reads several label columns.
    """
    first: Optional[tuple[str, str, str]] = None
    by_number: dict[float, tuple[str, str]] = {}
    fix = "set data.init_args.label_type to str (every spelling its own class) or int (every label an integer)"
    for kind, label, where in labels:
        if first is None:
            first = (kind, label, where)
        elif kind != first[0]:
            return (f"{where}: label {label!r}{_of(field)} is {_article(kind)} {kind} but the label at {first[2]} is "
                    f"{_article(first[0])} {first[0]} ({first[1]!r}); labels of mixed kinds ({first[0]}, {kind}) "
                    f"would be merged or split into classes silently: {fix}, or fix the data")
        number = _number(label)
        if number is None:
            continue
        seen = by_number.setdefault(number, (label, where))
        if seen[0] != label:
            return (f"{where}: label {label!r}{_of(field)} is the number {seen[0]!r} at {seen[1]} spelled another way and "
                    f"would be a class of its own: {fix}, or fix the data")
    return None


def one_class(trained: Collection[str], path: str, field: Optional[str] = None) -> Optional[str]:
    """Why the training classes cannot make a classifier (fewer than two), or None. ``path``: the train file."""
    if len(trained) >= 2:
        return None
    only = next(iter(trained), None)
    return (f"{path}: the training split has one class only ({only!r}){_of(field)}; a classifier needs examples "
            "of at least two")


def unlearnable_label(labels: Sequence[tuple[str, str]], known: Collection[str], trained: Collection[str],
                      source: str, field: Optional[str] = None) -> Optional[str]:
    """Why a record's label cannot be learned, or None: first any label outside the vocabulary ``known``, then any
    without a training example (a fixed label list can name classes that train lacks, e.g. ones only in
    validation). ``labels``: ``(class name, "path:line")``; ``source``: what ``known`` comes from, for the message."""
    for label, where in labels:
        if label not in known:
            return f"{where}: label {label!r}{_of(field)} does not occur in {source}"
    for label, where in labels:
        if label not in trained:
            return (f"{where}: label {label!r}{_of(field)} has no example in the training split, so the model cannot "
                    "learn it")
    return None
