"""The one text normalisation of fenlei, for every comparison of texts "up to trivial differences"."""

from __future__ import annotations

import unicodedata


def normalize_text(text: str) -> str:
    """The one text normalisation of fenlei (``data dedup --normalize``, ``data leakage``, ``al``, the leakage
    warning of ``fit``): NFKC, case-folded, punctuation (any Unicode ``P*`` category) replaced by a space,
    whitespace collapsed.

    Why each step: the same sentence reaches a data set in spellings that do not change its class. NFKC maps
    full-width Latin letters and digits (common in Chinese text: ``ｉＰｈｏｎｅ１２``) and other compatibility
    forms to the plain ones; ``casefold`` (not ``lower``) is Unicode's caseless matching (``Straße`` = ``STRASSE``);
    punctuation differs between Chinese full-width and ASCII forms (``，`` ``,``) and in trailing ``!!!``; and
    whitespace differs in amount and at the ends. Punctuation becomes a space rather than nothing, so that words
    it separated (``end.Start``) stay separate words.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())
