"""Feature markers: keyword rules that prefix marker tokens such as ``[CALCULATE] [HOW]`` to a text.

The research behind issue 3 added hand-written markers to prompts before predicting how long an answer will be.
The same rules also give the binary keyword flags that k-means labelling can cluster on (see
``NumericTargetDataModule``). Torch-free: a plain text transform.

Rules are case-insensitive. An English keyword matches on word boundaries (``"how"`` does not fire on
``"show"``); a keyword containing CJK characters matches as a substring, since Chinese has no spaces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

# Default keyword lists, English and Chinese. Users replace or extend them with ``rules`` in YAML.
DEFAULT_RULES: dict[str, list[str]] = {
    "[EXPLAIN]": ["explain", "describe", "elaborate", "what is meant", "解释", "说明", "描述", "阐述"],
    "[CREATIVE]": ["write a story", "poem", "story", "creative", "imagine", "compose", "故事", "诗", "创作", "想象"],
    "[CALCULATE]": ["calculate", "compute", "how many", "how much", "total", "sum", "percent", "计算", "多少", "总共", "一共"],
    "[LIST]": ["list", "enumerate", "name some", "examples of", "give me some", "列出", "列举", "哪些", "举例"],
    "[COMPARE]": ["compare", "difference", "versus", "vs", "better than", "比较", "区别", "对比", "不同"],
    "[CONDITIONAL]": ["if", "unless", "suppose", "assuming", "otherwise", "如果", "假如", "假设", "否则"],
    "[WHY]": ["why", "为什么", "为何"],
    "[HOW]": ["how", "如何", "怎么", "怎样"],
}
LENGTH_MARKERS = ("[SHORT]", "[MEDIUM]", "[LONG]")
MULTI_QUESTION_MARKER = "[MULTI_Q]"
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_QUESTION_MARKS = re.compile(r"[?？]")


def length_units(text: str) -> int:
    """Words for space-separated text; each CJK character counts as one word."""
    cjk = len(_CJK.findall(text))
    return cjk + len(_CJK.sub(" ", text).split())


def question_marks(text: str) -> int:
    return len(_QUESTION_MARKS.findall(text))


def _compile(keyword: str) -> re.Pattern[str]:
    if _CJK.search(keyword):
        return re.compile(re.escape(keyword), re.IGNORECASE)
    return re.compile(rf"(?<!\w){re.escape(keyword)}(?!\w)", re.IGNORECASE)


class FeatureMarkers:
    """Prefix marker tokens to texts from keyword rules, a length bucket and a multi-question check.

    Args:
        rules: Marker token -> keywords; default ``DEFAULT_RULES`` (English and Chinese lists).
        extra_rules: Merged into ``rules`` (a marker given here extends or creates that marker's list).
        length_thresholds: ``(short_below, long_from)`` in length units (words; CJK characters count one each):
            fewer than ``short_below`` -> ``[SHORT]``, at least ``long_from`` -> ``[LONG]``, else ``[MEDIUM]``.
            ``None`` turns the length markers off.
        multi_question: Add ``[MULTI_Q]`` when the text has two or more question marks.
    """

    def __init__(
        self,
        rules: Optional[Mapping[str, Sequence[str]]] = None,
        extra_rules: Optional[Mapping[str, Sequence[str]]] = None,
        length_thresholds: Optional[Sequence[int]] = (20, 60),
        multi_question: bool = True,
    ) -> None:
        merged: dict[str, list[str]] = {k: list(v) for k, v in (DEFAULT_RULES if rules is None else rules).items()}
        for marker, keywords in (extra_rules or {}).items():
            merged.setdefault(marker, []).extend(keywords)
        for marker, keywords in merged.items():
            if not (marker.startswith("[") and marker.endswith("]")) or " " in marker:
                raise ValueError(f"marker {marker!r} must look like [NAME] (brackets, no spaces)")
            if not keywords:
                raise ValueError(f"marker {marker} has no keywords")
        if length_thresholds is not None and (
            len(length_thresholds) != 2 or not 0 < length_thresholds[0] <= length_thresholds[1]
        ):
            raise ValueError(f"length_thresholds must be (short_below, long_from) with 0 < a <= b, got {length_thresholds}")
        self.rules = merged
        self.length_thresholds = None if length_thresholds is None else (int(length_thresholds[0]), int(length_thresholds[1]))
        self.multi_question = multi_question
        self._patterns = {marker: [_compile(k) for k in keywords] for marker, keywords in merged.items()}

    @classmethod
    def from_config(cls, config: Optional[Mapping[str, Any]]) -> Optional[FeatureMarkers]:
        """``None`` -> no markers; ``{}`` -> the defaults; otherwise the constructor's arguments."""
        if config is None:
            return None
        return cls(**dict(config))

    @property
    def tokens(self) -> list[str]:
        """Every marker this transform can emit, in a fixed order (the special tokens to register)."""
        tokens = list(LENGTH_MARKERS) if self.length_thresholds else []
        tokens += list(self.rules)
        if self.multi_question:
            tokens.append(MULTI_QUESTION_MARKER)
        return tokens

    def flags(self, text: str) -> dict[str, bool]:
        """Which keyword markers fire (length and multi-question markers excluded)."""
        return {marker: any(p.search(text) for p in patterns) for marker, patterns in self._patterns.items()}

    def markers(self, text: str) -> list[str]:
        found = []
        if self.length_thresholds:
            units = length_units(text)
            short_below, long_from = self.length_thresholds
            found.append("[SHORT]" if units < short_below else "[LONG]" if units >= long_from else "[MEDIUM]")
        found += [marker for marker, fired in self.flags(text).items() if fired]
        if self.multi_question and question_marks(text) >= 2:
            found.append(MULTI_QUESTION_MARKER)
        return found

    def __call__(self, text: str) -> str:
        return " ".join([*self.markers(text), text])


# Text features that k-means labelling can use next to the target (names usable in ``kmeans.features``).
BASIC_TEXT_FEATURES = ("words", "chars", "question_marks")


def text_feature(name: str, text: str, markers: FeatureMarkers) -> float:
    """One numeric feature of a text: ``words``, ``chars``, ``question_marks`` or a keyword flag such as
    ``kw:[CALCULATE]`` (1.0 when that marker's rule fires)."""
    if name == "words":
        return float(length_units(text))
    if name == "chars":
        return float(len(text))
    if name == "question_marks":
        return float(question_marks(text))
    if name.startswith("kw:"):
        marker = name[3:]
        if marker not in markers.rules:
            raise ValueError(f"feature {name!r}: no keyword rule {marker!r} (known: {', '.join(markers.rules)})")
        return float(any(p.search(text) for p in markers._patterns[marker]))
    raise ValueError(
        f"unknown text feature {name!r}; use one of {', '.join(BASIC_TEXT_FEATURES)} or kw:[MARKER] "
        f"(markers: {', '.join(markers.rules)})"
    )
