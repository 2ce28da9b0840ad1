"""Cut very long texts by characters before they reach the tokenizer (torch-free).

A tokenizer reads the whole text even when it keeps ``max_length`` tokens: one 100 MB line took 141 s and 15.7 GB
to keep 128 tokens. The characters kept per token are ``fenlei.text_limits.CHARS_PER_TOKEN``, the constant serving
cuts with, so a text is cut at the same place in training and in ``infer``/``serve`` (the same tokens); ordinary
text averages 3-5 characters per token (Chinese about 1.5), so only text the model never reads is dropped, unless
it is made of very long tokens (runs of one character, long URLs); ``max_chars`` sets the limit by hand. This
module adds the file:line reporting the DataModules need.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from fenlei.text_limits import CHARS_PER_TOKEN


def char_limit(max_length: int, max_chars: Optional[int] = None) -> int:
    """``max_chars`` when given, else ``max_length * CHARS_PER_TOKEN``."""
    limit = max_chars if max_chars is not None else max_length * CHARS_PER_TOKEN
    if limit < 1:
        raise ValueError(f"must be at least 1, got {limit}")
    return limit


@dataclass(frozen=True)
class Cuts:
    """Which texts of one file were cut: the line and length of the first, and how many of how many."""

    first_line: int
    first_chars: int
    count: int
    total: int
    limit: int

    def message(self, path: str, how: str) -> str:
        return (f"{path}:{self.first_line}: text of {self.first_chars} characters cut to {self.limit} before "
                f"tokenizing ({how}); {self.count} of {self.total} texts in this file were cut")


def cut_texts(texts: Sequence[str], lines: Sequence[int], limit: int) -> tuple[list[str], Optional[Cuts]]:
    """The texts with every one longer than ``limit`` characters cut to its first ``limit``, and what was cut."""
    out: list[str] = []
    first: Optional[tuple[int, int]] = None
    count = 0
    for text, line in zip(texts, lines, strict=True):
        if len(text) > limit:
            count += 1
            if first is None:
                first = (line, len(text))
            text = text[:limit]
        out.append(text)
    cuts = Cuts(first[0], first[1], count, len(out), limit) if first is not None else None
    return out, cuts


def cut_reason(max_length: int, max_chars_given: bool) -> str:
    """Where the limit of a cut came from, for the warning: the user's ``max_chars`` or the default rule."""
    if max_chars_given:
        return "data.init_args.max_chars"
    return f"max_length {max_length} x {CHARS_PER_TOKEN} characters; data.init_args.max_chars sets it"


def warn_cuts(cuts: Optional[Cuts], path: str, how: str) -> None:
    """One warning per file (``UserWarning``, so Lightning and pytest show it), naming the first cut line."""
    if cuts is not None:
        warnings.warn(cuts.message(path, how), UserWarning, stacklevel=3)
