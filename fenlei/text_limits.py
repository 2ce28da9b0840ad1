"""Text hygiene shared by every place that tokenizes user text: ``infer`` and ``serve`` (fenlei/serving) and the
DataModules (``datamodules/text_limits.py`` adds their file:line warnings). Standard library only (foundation layer), so the torch-free serving path can use it.

- :func:`cut_text` / :func:`cut_texts`: keep at most ``max_chars`` characters of a text *before* it reaches the
  tokenizer. The model only reads ``max_length`` tokens, but a tokenizer walks the whole string first: one 100 MB
  line took 141 s and 15.7 GB to keep 128 tokens. :func:`char_budget` is the default number of characters kept.
- :func:`text_problem`: why a text cannot be classified (None when it can): a lone surrogate, which no tokenizer
  accepts (a TypeError in ``tokenizers``) and which no UTF-8 file can hold, or a text with no visible character at
  all (only whitespace, NULs, zero-width characters), which would otherwise be classified as if it were text.

Training and serving cut with the same :data:`CHARS_PER_TOKEN`, so a long text keeps the same tokens in both.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Optional

# Characters kept per token of the model's max_length. Ordinary text runs at about 4-6 characters per WordPiece or
# SentencePiece token (Chinese about 1-2), so 32 cuts only text the model would never read, even with long words,
# URLs or runs of spaces; tokenizing 32 * 512 characters is still a few milliseconds.
CHARS_PER_TOKEN = 32

# Unicode categories with nothing to see: controls (NUL, ...), format characters (zero-width space, joiners, BOM,
# bidi marks), and separators. Plus a few letters/symbols that render as blank (Hangul fillers, Braille blank).
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
BLANK_CHARACTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def char_budget(max_length: int, chars_per_token: int = CHARS_PER_TOKEN) -> int:
    """Characters of a text worth tokenizing for a model that reads ``max_length`` tokens."""
    return max(1, int(max_length)) * int(chars_per_token)


def cut_text(text: str, max_chars: int) -> tuple[str, bool]:
    """``text`` cut to its first ``max_chars`` characters, and whether it was cut."""
    if len(text) <= max_chars:
        return text, False
    return text[:max_chars], True


def cut_texts(texts: Sequence[str], max_chars: int) -> tuple[list[str], list[int]]:
    """Every text cut to ``max_chars`` characters, and the indices of those that were cut (to warn with file:line)."""
    out, cut = [], []
    for i, text in enumerate(texts):
        kept, was_cut = cut_text(text, max_chars)
        out.append(kept)
        if was_cut:
            cut.append(i)
    return out, cut


def _visible(char: str) -> bool:
    return char not in BLANK_CHARACTERS and unicodedata.category(char) not in INVISIBLE_CATEGORIES


def text_problem(text: str) -> Optional[str]:
    """Why ``text`` cannot be classified, or None. The message never contains the text (it may be huge or hostile).

    Cut long texts first (:func:`cut_text`): the checks walk the string."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return (f"contains a lone surrogate (U+{ord(text[err.start]):04X}) at character {err.start + 1}; "
                "send valid Unicode (a UTF-16 surrogate pair must be one character)")
    if not any(_visible(char) for char in text):
        return "has no visible characters (only whitespace, control characters such as NUL, or zero-width characters)"
    return None
