"""Stratified, seeded splits of labelled examples (torch-free: the data tools use them too)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any


def label_sort_key(label: str) -> tuple[Any, ...]:
    """Integer-like labels sort numerically ("2" before "10"); others alphabetically, after numbers. Two spellings
    of one integer ("01" and "1", kept apart by ``label_type: str``) sort by their text, never by set order."""
    try:
        return (0, int(label), label)
    except ValueError:
        return (1, label)


def stratified_split_n(labels: Sequence[str], ratios: Sequence[float], seed: int) -> list[list[int]]:
    """Split indices into ``len(ratios)`` parts, the first being train, stratified by label and seeded.

    Classes are visited in label order with one seeded RNG; each class is shuffled and split ``i >= 1`` takes
    ``max(1, round(ratios[i] * n_c))`` examples from the front (in split order), train the rest; train always
    keeps at least one. A class with fewer examples than splits gives one to train, then one to each later split
    in order. So every class with at least ``len(ratios)`` examples appears in every split. With two ratios
    ``(1 - f, f)`` this is :func:`stratified_split`.
    Returns sorted index lists.
    """
    k = len(ratios)
    if k < 2 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"ratios must be 2 or more positive numbers summing to 1, got {list(ratios)}")
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    rng = random.Random(seed)
    parts: list[list[int]] = [[] for _ in range(k)]
    for label in sorted(by_class, key=label_sort_key):
        members = by_class[label]
        rng.shuffle(members)
        n = len(members)
        if n < k:
            sizes = [1 if i < n - 1 else 0 for i in range(k - 1)]
        else:
            sizes = [max(1, round(r * n)) for r in ratios[1:]]
            while sum(sizes) > n - 1:  # keep one for train: shrink the largest later split
                largest = max(range(len(sizes)), key=lambda i: sizes[i])
                sizes[largest] -= 1
        start = 0
        for i, size in enumerate(sizes, start=1):
            parts[i].extend(members[start : start + size])
            start += size
        parts[0].extend(members[start:])
    return [sorted(p) for p in parts]


def stratified_split(labels: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into (train, validation) with ``fraction`` of every class in validation, seeded.

    A class with a single example stays in train (it could not be learned otherwise); every class with two or
    more examples puts at least one into validation.
    """
    train, validation = stratified_split_n(labels, [1.0 - fraction, fraction], seed)
    return train, validation
