"""Train/test leakage: test (or validation) rows whose text also occurs in train.

Three kinds of match, each test row counted once, under the strongest kind it has:

- ``exact``: the text is byte-for-byte a train text;
- ``normalised``: equal after :func:`fenlei.data.normalize.normalize_text` (the one normalisation fenlei uses for
  dedup, active learning and here);
- ``near``: the character n-gram sets of the normalised texts have a Jaccard similarity of at least a threshold.
  Candidates come from MinHash LSH (``datasketch``), and every candidate's Jaccard is then computed exactly on
  the two n-gram sets, so a pair reported is above the threshold for certain; LSH may miss a few pairs just
  above it (its recall was measured against brute force, docs/data_tools.md).

``fenlei data leakage`` (:func:`fenlei.data.tools.leakage`) lists them all; ``fit`` warns of the first two at start
(:func:`split_leak_warnings`: hash sets only, no MinHash: 0.1 s for banking77's 13k rows, 1.1 s for
online_shopping_10_cats' 63k longer ones, 3.6M characters, on a 2-core EPYC).
Torch-free; ``datasketch`` is imported only when near-duplicates are searched.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from datamodules.readers import DataError
from fenlei.data.normalize import normalize_text

KINDS = ("exact", "normalised", "near")
# Defaults of ``fenlei data leakage``; measured on the shared data sets in docs/data_tools.md ("Choosing n"). The
# n of the character n-grams is chosen per text when not given: 3 for a text written mostly in CJK characters,
# 5 for any other. A Chinese character carries about a morpheme, so a 3-gram spans one or two words, as a 5-gram
# of English letters does; on short Chinese texts 5-grams also make one changed character cost 5 of ~20 n-grams.
# Measured on online_shopping_10_cats test: 3-grams find 68 near pairs, 5-grams 53, the 15 extra being one-character
# edits and repeated phrases; on English intent data 3-grams add mostly reworded paraphrases (banking77: 270 vs 121).
CJK_NGRAM = 3
OTHER_NGRAM = 5
NGRAM: Optional[int] = None  # None: per text, CJK_NGRAM or OTHER_NGRAM
THRESHOLD = 0.8
NUM_PERM = 128
# MinHash LSH is asked for candidates from a lower similarity than the threshold, so that pairs just above it are
# rarely missed (at 128 permutations an LSH threshold of 0.6 finds a pair of Jaccard 0.8 with probability 0.986,
# one of 0.7 with 0.87); the exact Jaccard of every candidate then decides.
LSH_MARGIN = 0.2


def is_cjk(char: str) -> bool:
    """Han (CJK unified ideographs and their extensions, compatibility ideographs), kana and hangul."""
    cp = ord(char)
    return (0x2E80 <= cp <= 0x9FFF or 0xAC00 <= cp <= 0xD7AF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x3FFFF)


def ngram_size(text: str, ngram: Optional[int] = NGRAM) -> int:
    """``ngram`` if given, else CJK_NGRAM for a text at least half of whose non-space characters are CJK."""
    if ngram is not None:
        return ngram
    chars = [ch for ch in text if not ch.isspace()]
    return CJK_NGRAM if chars and 2 * sum(map(is_cjk, chars)) >= len(chars) else OTHER_NGRAM


def ngrams(text: str, n: int) -> frozenset[str]:
    """The set of character n-grams of ``text``; a text shorter than ``n`` is its own single n-gram."""
    if len(text) <= n:
        return frozenset((text,))
    return frozenset(text[i : i + n] for i in range(len(text) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    shared = len(a & b)
    return shared / (len(a) + len(b) - shared)


@dataclass(frozen=True)
class Leak:
    """One test row found in train: the train row shown (``train_index``), the kind, the n-gram Jaccard of the pair
    (1.0 for exact and normalised matches), the MinHash estimate (near only) and how many train rows match the test
    row at that kind (``train_matches``; the one shown is the most similar, one with the test label first)."""

    test_index: int
    train_index: int
    kind: str
    jaccard: float
    jaccard_estimate: Optional[float]
    train_matches: int


def _choose(test_label: Optional[str], candidates: Sequence[tuple[float, int]], labels: Sequence[Optional[str]]
            ) -> tuple[float, int]:
    """The train row to show: highest Jaccard, then one whose label is the test label, then the first line."""
    return min(candidates, key=lambda c: (-c[0], labels[c[1]] != test_label, c[1]))


def find_leaks(
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    train_labels: Optional[Sequence[Optional[str]]] = None,
    test_labels: Optional[Sequence[Optional[str]]] = None,
    *,
    near: bool = True,
    threshold: float = THRESHOLD,
    ngram: Optional[int] = NGRAM,
    num_perm: int = NUM_PERM,
    seed: int = 1,
) -> list[Leak]:
    """Every test row that matches a train row, with its strongest kind, in test order.

    A text that is empty after normalisation (punctuation only) matches exactly or not at all: "!!!" and "?" are no
    leak. ``near=False`` skips the MinHash search (exact and normalised only). ``ngram=None`` chooses n per text
    (:func:`ngram_size`).
    """
    train_labels = train_labels if train_labels is not None else [None] * len(train_texts)
    test_labels = test_labels if test_labels is not None else [None] * len(test_texts)
    exact: dict[str, list[int]] = {}
    normal: dict[str, list[int]] = {}
    for i, text in enumerate(train_texts):
        exact.setdefault(text, []).append(i)
        key = normalize_text(text)
        if key:
            normal.setdefault(key, []).append(i)
    leaks: list[Leak] = []
    pending: list[tuple[int, str]] = []  # test rows without an exact or normalised match, for the near search
    for j, text in enumerate(test_texts):
        key = normalize_text(text)
        for kind, matches in (("exact", exact.get(text)), ("normalised", normal.get(key) if key else None)):
            if matches:
                _, i = _choose(test_labels[j], [(1.0, i) for i in matches], train_labels)
                leaks.append(Leak(j, i, kind, 1.0, None, len(matches)))
                break
        else:
            if key:
                pending.append((j, key))
    if near and pending:
        leaks += _near_leaks(normal, pending, train_labels, test_labels, threshold, ngram, num_perm, seed)
        leaks.sort(key=lambda leak: leak.test_index)
    return leaks


def _import_datasketch() -> Any:
    try:
        import datasketch
    except ImportError:
        raise DataError("near-duplicate search needs the datasketch package: pip install 'fenlei[data]' (or "
                        "pip install datasketch); --no-near skips it") from None
    return datasketch


def _near_leaks(
    normal: Mapping[str, list[int]],
    pending: Sequence[tuple[int, str]],
    train_labels: Sequence[Optional[str]],
    test_labels: Sequence[Optional[str]],
    threshold: float,
    ngram: Optional[int],
    num_perm: int,
    seed: int,
) -> list[Leak]:
    datasketch = _import_datasketch()
    keys = list(normal)  # one LSH entry per distinct normalised train text
    grams = [ngrams(key, ngram_size(key, ngram)) for key in keys]
    encode = [[g.encode("utf-8") for g in sorted(s)] for s in grams]
    hashes = list(datasketch.MinHash.generator(encode, num_perm=num_perm, seed=seed))
    lsh = datasketch.MinHashLSH(threshold=max(0.05, threshold - LSH_MARGIN), num_perm=num_perm)
    with lsh.insertion_session() as session:
        for index, minhash in enumerate(hashes):
            session.insert(index, minhash, check_duplication=False)
    test_grams = [ngrams(key, ngram_size(key, ngram)) for _, key in pending]
    test_hashes = datasketch.MinHash.generator(([g.encode("utf-8") for g in sorted(s)] for s in test_grams),
                                               num_perm=num_perm, seed=seed)
    leaks = []
    for (j, _), grams_j, minhash in zip(pending, test_grams, test_hashes, strict=True):
        found = []
        for index in lsh.query(minhash):
            similarity = jaccard(grams_j, grams[index])
            if similarity >= threshold:
                found.append((similarity, index))
        if not found:
            continue
        candidates = [(similarity, i) for similarity, index in found for i in normal[keys[index]]]
        similarity, i = _choose(test_labels[j], candidates, train_labels)
        estimate = minhash.jaccard(hashes[next(index for s, index in found if i in normal[keys[index]])])
        leaks.append(Leak(j, i, "near", similarity, float(estimate), len(candidates)))
    return leaks


# --------------------------------------------------------------------------------------------------- fit warning


@dataclass(frozen=True)
class SplitTexts:
    """The texts of one split as a DataModule read them, and the file they came from (``from_train``: a split
    drawn from the train file, so any overlap is duplicates inside that file)."""

    texts: Sequence[str]
    path: Optional[Path]
    from_train: bool = False


def overlap_counts(train_texts: Sequence[str], texts: Sequence[str]) -> tuple[int, int]:
    """(rows of ``texts`` that occur exactly in train, rows that occur after normalisation, exact ones included)."""
    return _overlap(_train_keys(train_texts), texts)


def _train_keys(train_texts: Sequence[str]) -> tuple[set[str], set[str]]:
    return set(train_texts), {key for key in map(normalize_text, train_texts) if key}


def _overlap(keys: tuple[set[str], set[str]], texts: Sequence[str]) -> tuple[int, int]:
    exact, normal = keys
    n_exact = n_normal = 0
    for text in texts:
        if text in exact:
            n_exact += 1
            n_normal += 1
        else:
            key = normalize_text(text)
            n_normal += bool(key) and key in normal
    return n_exact, n_normal


def share(count: int, total: int) -> str:
    """``count / total`` as a percentage with one decimal; ``<0.1%`` rather than a misleading ``0.0%``."""
    if total == 0 or count == 0:
        return "0%"
    fraction = count / total
    return "<0.1%" if fraction < 0.001 else f"{fraction:.1%}"


def split_leak_warnings(splits: Mapping[str, SplitTexts | Mapping[str, Any]],
                        text_fields: Sequence[str] = ("text",)) -> list[str]:
    """One warning line per split (other than train) with rows that also occur in train, exactly or after
    normalisation. Exact and normalised matches only (two hash sets): near-duplicates need the MinHash search of
    ``fenlei data leakage``, which the line names. DataModules give each split as a dict of SplitTexts' fields."""
    splits = {name: split if isinstance(split, SplitTexts) else SplitTexts(**split) for name, split in splits.items()}
    train = splits.get("train")
    if train is None:
        return []
    field = f" --text_field {text_fields[0]}" if len(text_fields) == 1 and text_fields[0] != "text" else ""
    keys = None
    lines = []
    for name, split in splits.items():
        if name == "train" or not split.texts:
            continue
        keys = keys or _train_keys(train.texts)
        n_exact, n_normal = _overlap(keys, split.texts)
        if not n_normal:
            continue
        exactly = f"{n_exact:,} of them exactly" if n_exact else "none exactly"
        head = (f"fenlei: {n_normal:,} of {len(split.texts):,} {name} rows ({share(n_normal, len(split.texts))}) "
                f"also occur in train after normalisation ({exactly})")
        if split.from_train:
            hint = (f"the {name} split is drawn from {train.path}, which holds these duplicates; fenlei data dedup "
                    f"--input {train.path} --output DEDUPED --normalize removes them")
        else:
            hint = (f"fenlei data leakage --train {train.path} --test {split.path}{field} --output leakage.jsonl "
                    "lists them, near-duplicates too")
        lines.append(f"{head}; {hint}")
    return lines


def warn_split_leakage(datamodule: Any) -> list[str]:
    """Print :func:`split_leak_warnings` for a DataModule that offers ``split_texts()`` (every fenlei
    classification DataModule); others are skipped. Returns the lines printed."""
    split_texts = getattr(datamodule, "split_texts", None)
    if not callable(split_texts):
        return []
    lines = split_leak_warnings(split_texts(), getattr(datamodule, "text_fields", ("text",)))
    for line in lines:
        print(line, file=sys.stderr)
    return lines
