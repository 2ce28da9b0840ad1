"""Data tools for labelled text files: ``python cli.py data {dedup,mask,split,stats,oversample,augment,leakage,noise}``.

Pure Python and the standard library (``transformers`` is imported only inside :class:`BackTranslationAugmenter`,
``datasketch`` only by the near-duplicate search of ``leakage``, in :mod:`fenlei.data.leakage`, numpy,
scikit-learn and cleanlab only by ``noise``, in :mod:`fenlei.data.noise`):
the commands start in well under a second and never load torch or Lightning.

Every operation reads JSONL or CSV/TSV through ``datamodules.readers`` (errors name the file and line), writes
JSONL (``ensure_ascii=False``) atomically, keeps every input field of a row, and refuses to write over its input.
Each operation is a function whose signature is its command line (``fenlei.typed_cli``); problems raise
:class:`DataError`, which the ``fenlei`` command reports in one line with exit status 2.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from datamodules.readers import DataError, _field_text, read_rows
from datamodules.splits import label_sort_key, stratified_split_n
from fenlei.data.leakage import CJK_NGRAM, KINDS, NGRAM, NUM_PERM, OTHER_NGRAM, THRESHOLD, find_leaks, share
from fenlei.data.normalize import normalize_text
from fenlei.errors import exit_status_of
from fenlei.io import atomic_write_json, atomic_write_text

Row = dict[str, Any]


# --------------------------------------------------------------------------------------------------- files


def check_not_input(input_path: str | Path, output_path: str | Path) -> None:
    """Raise DataError if ``output_path`` is the input file (after resolving links and ``..``)."""
    inp, out = Path(input_path).resolve(), Path(output_path).resolve()
    same = inp == out
    if not same and inp.exists() and out.exists():
        try:
            same = inp.samefile(out)
        except OSError:
            same = False
    if same:
        raise DataError(f"{output_path}: output is the input file {input_path}; refusing to overwrite the input")


def load(path: str | Path) -> list[tuple[int, Row]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return read_rows(path)


def write_jsonl(path: str | Path, rows: Sequence[Row]) -> Path:
    """Write rows as JSONL (UTF-8, ``ensure_ascii=False``), atomically."""
    return atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _labels(path: Path, rows: list[tuple[int, Row]], label_field: str) -> list[str]:
    labels = []
    for lineno, row in rows:
        label = _field_text(path, lineno, row, label_field).strip()
        if not label:
            raise DataError(f"{path}:{lineno}: empty label in field {label_field!r}")
        labels.append(label)
    return labels


# --------------------------------------------------------------------------------------------------- dedup


def dedup_rows(
    rows: Sequence[Row], keys: Sequence[str], labels: Optional[Sequence[Optional[str]]] = None
) -> tuple[list[Row], dict[str, int]]:
    """Keep the first row of every key; report removed rows, duplicate groups and groups with conflicting labels."""
    first: dict[str, int] = {}
    group_labels: dict[str, set] = {}
    group_size: Counter = Counter()
    kept: list[Row] = []
    for index, (row, key) in enumerate(zip(rows, keys, strict=True)):
        group_size[key] += 1
        if labels is not None and labels[index] is not None:
            group_labels.setdefault(key, set()).add(labels[index])
        if key not in first:
            first[key] = index
            kept.append(row)
    groups = [k for k, n in group_size.items() if n > 1]
    report = {
        "input": len(rows),
        "kept": len(kept),
        "removed": len(rows) - len(kept),
        "duplicate_groups": len(groups),
        "conflicting_label_groups": sum(1 for k in groups if len(group_labels.get(k, ())) > 1),
    }
    return kept, report


def dedup(*, input: str, output: str, normalize: bool = False, text_field: str = "text",
          label_field: str = "label") -> dict[str, Any]:
    """Remove duplicate texts, keeping the first occurrence.

    Args:
        input: input file (.jsonl, .json, .csv or .tsv)
        output: output JSONL file (must not be the input)
        normalize: compare texts after normalize_text (NFKC, case-folded, no punctuation or extra spaces)
        text_field: field holding the text
        label_field: label field, for the conflicting-label count
    """
    check_not_input(input, output)
    path = Path(input)
    rows = load(path)
    texts = [_field_text(path, lineno, row, text_field) for lineno, row in rows]
    keys = [normalize_text(t) if normalize else t for t in texts]
    labels = [str(row[label_field]).strip() if row.get(label_field) is not None else None for _, row in rows]
    kept, report = dedup_rows([row for _, row in rows], keys, labels)
    write_jsonl(output, kept)
    mode = "normalized" if normalize else "exact"
    print(
        f"dedup ({mode}): {report['input']} rows, removed {report['removed']}, kept {report['kept']}; "
        f"{report['duplicate_groups']} duplicate groups, {report['conflicting_label_groups']} with conflicting labels"
        f" -> {output}"
    )
    return report


# --------------------------------------------------------------------------------------------------- mask

_B = r"(?<![0-9A-Za-z])"  # no letter or digit just before (Chinese characters may touch a number)
_E = r"(?![0-9A-Za-z])"  # no letter or digit just after

EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])", re.ASCII)
# Order numbers: a keyword (kept) followed by the number, or "#" followed by 4+ digits.
ORDER_KEYWORD_RE = re.compile(
    r"((?:订单号|订单编号|订单|单号)[\s:：]*|(?<![A-Za-z])(?i:order)(?:\s*(?i:no\.?|number|num|id))?[\s:：]*)"
    + r"(#?\s?[A-Za-z]{0,3}\d[A-Za-z0-9-]{3,})"
    + _E
)
ORDER_HASH_RE = re.compile(r"(?<![0-9A-Za-z&])#\s?\d{4,}" + _E)
PHONE_RES = [
    # Chinese mobile: 13812345678, 138-1234-5678, 138 1234 5678, +86 138..., 0086-138...
    re.compile(_B + r"(?:(?:\+|00)86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}" + _E),
    # International with "+": +1 (555) 123-4567, +44 20 7946 0958
    re.compile(r"(?<![0-9A-Za-z+])\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){1,4}" + _E),
    # North-American style without country code: (555) 123-4567, 555-123-4567
    re.compile(r"(?:\(\d{3}\)\s?|" + _B + r"\d{3}[-.])\d{3}[-.]\d{4}" + _E),
    # Landline with area code: 010-12345678, 0755-1234567, (010) 12345678
    re.compile(r"(?:\(0\d{2,3}\)\s?|" + _B + r"0\d{2,3}-)\d{7,8}" + _E),
]
ID_RES = [
    re.compile(_B + r"\d{17}[\dXx]" + _E),  # Chinese resident ID
    re.compile(_B + r"\d{12,}" + _E),  # any long digit run
    # long letter+digit runs (account or device IDs): 12+ characters, at least 6 digits
    re.compile(_B + r"(?=[A-Za-z0-9]*[A-Za-z])(?=(?:[A-Za-z]*\d){6})[A-Za-z0-9]{12,}" + _E),
]
PLACEHOLDERS = ("[PHONE]", "[EMAIL]", "[ORDER]", "[ID]")


def _phone_digits_ok(match: re.Match) -> bool:
    return 7 <= sum(ch.isdigit() for ch in match.group(0)) <= 15


def mask_text(text: str, counts: Optional[Counter] = None) -> str:
    """Replace e-mails, order numbers, phone numbers and long ID-like runs by placeholders; count them."""
    counts = counts if counts is not None else Counter()

    def sub(pattern: re.Pattern, placeholder: str, s: str, check=None, keep_group: Optional[int] = None) -> str:
        def repl(match: re.Match) -> str:
            if check is not None and not check(match):
                return match.group(0)
            counts[placeholder] += 1
            return (match.group(keep_group) if keep_group else "") + placeholder

        return pattern.sub(repl, s)

    text = sub(EMAIL_RE, "[EMAIL]", text)
    text = sub(ORDER_KEYWORD_RE, "[ORDER]", text, keep_group=1)
    text = sub(ORDER_HASH_RE, "[ORDER]", text)
    for pattern in PHONE_RES:
        text = sub(pattern, "[PHONE]", text, check=_phone_digits_ok)
    for pattern in ID_RES:
        text = sub(pattern, "[ID]", text)
    return text


def mask(*, input: str, output: str, fields: Sequence[str] = ("text",)) -> dict[str, Any]:
    """Mask phone numbers, e-mails, order numbers and long IDs as [PHONE], [EMAIL], [ORDER], [ID].

    Args:
        input: input file (.jsonl, .json, .csv or .tsv)
        output: output JSONL file (must not be the input)
        fields: fields to mask
    """
    if not fields:
        raise DataError("--fields needs at least one field name")
    check_not_input(input, output)
    path = Path(input)
    rows = load(path)
    counts: Counter = Counter()
    out = []
    for lineno, row in rows:
        new = dict(row)
        for field in fields:
            if field not in row:
                raise DataError(
                    f"{path}:{lineno}: missing field {field!r} (fields present: {', '.join(sorted(map(str, row)))})"
                )
            value = row[field]
            if isinstance(value, str):
                new[field] = mask_text(value, counts)
            elif isinstance(value, int) and not isinstance(value, bool):  # a bare number may be a phone or ID
                masked = mask_text(str(value), counts)
                new[field] = value if masked == str(value) else masked
        out.append(new)
    write_jsonl(output, out)
    report = {p: counts.get(p, 0) for p in PLACEHOLDERS}
    print(f"mask: {len(out)} rows; " + ", ".join(f"{p} {n}" for p, n in report.items()) + f" -> {output}")
    return report


# --------------------------------------------------------------------------------------------------- split

SPLIT_NAMES = ("train", "validation", "test")


def split(*, input: str, out_dir: str, ratios: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 42,
          label_field: str = "label") -> dict[str, Any]:
    """Stratified, seeded train/validation/test split into OUT_DIR/{train,validation,test}.jsonl.

    Args:
        input: input file (.jsonl, .json, .csv or .tsv)
        out_dir: output folder
        ratios: train validation test
        seed: seed of the split
        label_field: field holding the label
    """
    if len(ratios) != 3:
        raise DataError(f"--ratios needs three numbers (train validation test), got {len(ratios)}")
    folder = Path(out_dir)
    outputs = [folder / f"{name}.jsonl" for name in SPLIT_NAMES]
    for output in outputs:
        check_not_input(input, output)
    path = Path(input)
    rows = load(path)
    labels = _labels(path, rows, label_field)
    try:
        parts = stratified_split_n(labels, list(ratios), seed)
    except ValueError as err:
        raise DataError(f"--ratios: {err}") from None
    report: dict[str, Any] = {}
    for name, output, indices in zip(SPLIT_NAMES, outputs, parts, strict=True):
        write_jsonl(output, [rows[i][1] for i in indices])
        report[name] = {"rows": len(indices), "classes": len({labels[i] for i in indices})}
    summary = ", ".join(f"{name} {r['rows']} rows / {r['classes']} classes" for name, r in report.items())
    print(f"split: {len(rows)} rows, {len(set(labels))} classes -> {summary} in {folder}")
    return report


# --------------------------------------------------------------------------------------------------- stats


def class_stats(labels: Sequence[str], min_count: int) -> dict[str, Any]:
    counts = Counter(labels)
    ordered = sorted(counts, key=label_sort_key)
    largest, smallest = max(counts.values()), min(counts.values())
    return {
        "rows": len(labels),
        "classes": len(counts),
        "counts": {label: counts[label] for label in ordered},
        "max_count": largest,
        "min_count": smallest,
        "imbalance_ratio": largest / smallest,
        "threshold": min_count,
        "below_threshold": [label for label in ordered if counts[label] < min_count],
    }


def stats_markdown(stats: dict[str, Any]) -> str:
    lines = ["| label | count | share | below threshold |", "|---|---:|---:|---|"]
    for label, count in stats["counts"].items():
        flag = "yes" if label in stats["below_threshold"] else ""
        lines.append(f"| {label} | {count} | {count / stats['rows']:.2%} | {flag} |")
    lines += [
        "",
        f"{stats['rows']} rows, {stats['classes']} classes; imbalance ratio (max/min) "
        f"{stats['imbalance_ratio']:.2f} ({stats['max_count']}/{stats['min_count']}); "
        f"{len(stats['below_threshold'])} classes under {stats['threshold']}",
    ]
    return "\n".join(lines)


def stats(*, input: str, label_field: str = "label", min_count: int = 80,
          output: Optional[str] = None) -> dict[str, Any]:
    """Class counts, imbalance ratio and classes under a threshold, as a markdown table.

    Args:
        input: input file (.jsonl, .json, .csv or .tsv)
        label_field: field holding the label
        min_count: classes with fewer examples are listed
        output: also write the numbers as JSON here
    """
    if output:
        check_not_input(input, output)
    path = Path(input)
    rows = load(path)
    numbers = class_stats(_labels(path, rows, label_field), min_count)
    print(stats_markdown(numbers))
    if output:
        atomic_write_json(output, numbers)
    return numbers


# --------------------------------------------------------------------------------------------------- oversample


def oversample_rows(
    rows: Sequence[Row], labels: Sequence[str], min_per_class: int, seed: int
) -> tuple[list[Row], dict[str, int]]:
    """Originals in order, then seeded duplicates (``"oversampled": true``) bringing each class to ``min_per_class``.

    Duplicates cycle through a shuffled copy of the class, so every example is repeated as evenly as possible.
    """
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    rng = random.Random(seed)
    out = [dict(row) for row in rows]
    added: dict[str, int] = {}
    for label in sorted(by_class, key=label_sort_key):
        members = list(by_class[label])
        need = min_per_class - len(members)
        if need <= 0:
            continue
        rng.shuffle(members)
        for i in range(need):
            out.append({**rows[members[i % len(members)]], "oversampled": True})
        added[label] = need
    return out, added


def oversample(*, input: str, output: str, min_per_class: int, seed: int = 42,
               label_field: str = "label") -> dict[str, Any]:
    """Duplicate examples of small classes (seeded) up to --min_per_class; duplicates get "oversampled": true.

    Args:
        input: input file (.jsonl, .json, .csv or .tsv)
        output: output JSONL file (must not be the input)
        min_per_class: smallest number of examples per class after oversampling
        seed: seed of the duplicate choice
        label_field: field holding the label
    """
    check_not_input(input, output)
    if min_per_class < 1:
        raise DataError(f"--min_per_class must be at least 1, got {min_per_class}")
    path = Path(input)
    rows = load(path)
    labels = _labels(path, rows, label_field)
    out, added = oversample_rows([row for _, row in rows], labels, min_per_class, seed)
    write_jsonl(output, out)
    print(
        f"oversample: {len(rows)} rows -> {len(out)} rows; {sum(added.values())} duplicates added to "
        f"{len(added)} classes under {min_per_class} -> {output}"
    )
    return {"input": len(rows), "output": len(out), "added": added}


# --------------------------------------------------------------------------------------------------- augment


class Augmenter:
    """Text augmentation: ``augment(texts)`` returns one new text per input text, in order."""

    def augment(self, texts: Sequence[str]) -> list[str]:
        raise NotImplementedError


class BackTranslationAugmenter(Augmenter):
    """Back-translation with local MarianMT folders: ``model_path`` translates source -> pivot and
    ``pivot_model_path`` pivot -> source. Without a pivot model the forward translation alone is returned.

    The folders are checked at construction (a clear DataError if missing); transformers is imported, and the
    models loaded, on the first ``augment`` call only.
    """

    def __init__(
        self,
        model_path: str | Path,
        pivot_model_path: Optional[str | Path] = None,
        batch_size: int = 16,
        max_length: int = 256,
    ) -> None:
        self.model_paths = [Path(model_path)] + ([Path(pivot_model_path)] if pivot_model_path else [])
        for option, p in zip(("--backtranslate_model", "--pivot_model"), self.model_paths, strict=False):
            if not p.is_dir():
                raise DataError(f"{p}: {option} model not found (expected a local MarianMT folder with config.json)")
            if not (p / "config.json").is_file():
                raise DataError(f"{p}: {option} is not a model folder (no config.json)")
        self.batch_size = batch_size
        self.max_length = max_length
        self._models: Optional[list] = None

    def _load(self) -> list:
        if self._models is None:
            from transformers import MarianMTModel, MarianTokenizer

            self._models = [
                (MarianTokenizer.from_pretrained(p), MarianMTModel.from_pretrained(p)) for p in self.model_paths
            ]
        return self._models

    def _translate(self, tokenizer, model, texts: list[str]) -> list[str]:
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            )
            generated = model.generate(**batch, max_length=self.max_length)
            out.extend(tokenizer.batch_decode(generated, skip_special_tokens=True))
        return out

    def augment(self, texts: Sequence[str]) -> list[str]:
        result = list(texts)
        for tokenizer, model in self._load():
            result = self._translate(tokenizer, model, result)
        return result


def augment_rows(rows: Sequence[Row], text_field: str, augmenter: Augmenter) -> tuple[list[Row], int]:
    """Originals, then one augmented copy per row (``"augmented": true``) whose text differs from the original."""
    texts = [str(row[text_field]) for row in rows]
    new_texts = augmenter.augment(texts)
    if len(new_texts) != len(texts):
        raise DataError(f"augmenter returned {len(new_texts)} texts for {len(texts)} inputs")
    out = [dict(row) for row in rows]
    added = 0
    for row, old, new in zip(rows, texts, new_texts, strict=True):
        if new and new.strip() and new.strip() != old.strip():
            out.append({**row, text_field: new, "augmented": True})
            added += 1
    return out, added


def read_augment_input(input: str, output: str, text_field: str) -> list[tuple[int, Row]]:
    """The rows to augment, checked (every row has the text field) before any model is loaded."""
    check_not_input(input, output)
    path = Path(input)
    rows = load(path)
    for lineno, row in rows:
        _field_text(path, lineno, row, text_field)
    return rows


def write_augmented(rows: list[tuple[int, Row]], output: str, text_field: str, augmenter: Augmenter) -> dict[str, Any]:
    """Write the rows and their augmented copies to ``output``."""
    out, added = augment_rows([row for _, row in rows], text_field, augmenter)
    write_jsonl(output, out)
    print(f"augment: {len(rows)} rows, {added} augmented rows added -> {output}")
    return {"input": len(rows), "added": added}


def augment(*, input: str, output: str, backtranslate_model: str, pivot_model: Optional[str] = None,
            text_field: str = "text", batch_size: int = 16) -> dict[str, Any]:
    """Back-translation augmentation with local MarianMT models; new rows get "augmented": true.

    Args:
        input: input file (.jsonl, .json, .csv or .tsv)
        output: output JSONL file (must not be the input)
        backtranslate_model: local MarianMT folder translating source -> pivot language
        pivot_model: local MarianMT folder translating pivot -> source language
        text_field: field holding the text
        batch_size: texts translated per batch
    """
    rows = read_augment_input(input, output, text_field)
    augmenter = BackTranslationAugmenter(backtranslate_model, pivot_model, batch_size=batch_size)
    return write_augmented(rows, output, text_field, augmenter)


# --------------------------------------------------------------------------------------------------- leakage


def _texts_and_labels(path: Path, text_field: str, label_field: str
                      ) -> tuple[list[tuple[int, Row]], list[str], list[Optional[str]]]:
    """The rows of a file, their texts and their labels (None where a row has no label field: a test file may be
    unlabelled); a missing or unreadable text, or a label that is present but unreadable, is a DataError."""
    rows = load(path)
    texts = [_field_text(path, lineno, row, text_field) for lineno, row in rows]
    labels = [_field_text(path, lineno, row, label_field).strip() if label_field in row else None
              for lineno, row in rows]
    return rows, texts, labels


def leakage(*, train: str, test: str, output: Optional[str] = None, text_field: str = "text",
            label_field: str = "label", threshold: float = THRESHOLD, ngram: Optional[int] = NGRAM, near: bool = True,
            num_perm: int = NUM_PERM, seed: int = 1) -> dict[str, Any]:
    """Test rows that also occur in train: exact, equal after normalisation, or near-duplicates (MinHash).

    Each test row is counted once, under its strongest kind (exact, then normalised, then near). Normalisation is
    normalize_text: NFKC, case-folded, punctuation and extra whitespace removed. Near: Jaccard similarity of the
    character n-gram sets of the normalised texts at least --threshold; candidates from MinHash LSH, each
    candidate's Jaccard then computed exactly.

    Args:
        train: train file (.jsonl, .json, .csv or .tsv)
        test: test (or validation) file
        output: write one JSONL line per leaked test row here: test_line, train_line, kind, jaccard,
            jaccard_estimate, both texts, both labels, labels_agree, train_matches
        text_field: field holding the text, in both files
        label_field: field holding the label (rows without it have label null)
        threshold: smallest Jaccard similarity (of character n-gram sets) for a near-duplicate
        ngram: n of the character n-grams; default: 3 for a text mostly in CJK characters, 5 for others
        near: search near-duplicates (--no-near: exact and normalised only, no datasketch needed)
        num_perm: MinHash permutations (more: a closer estimate, slower)
        seed: MinHash seed
    """
    if not 0.0 < threshold <= 1.0:
        raise DataError(f"--threshold must be in (0, 1], got {threshold}")
    if ngram is not None and ngram < 1:
        raise DataError(f"--ngram must be at least 1, got {ngram}")
    if num_perm < 16:
        raise DataError(f"--num_perm must be at least 16, got {num_perm}")
    if output:
        check_not_input(train, output)
        check_not_input(test, output)
    train_rows, train_texts, train_labels = _texts_and_labels(Path(train), text_field, label_field)
    test_rows, test_texts, test_labels = _texts_and_labels(Path(test), text_field, label_field)
    leaks = find_leaks(train_texts, test_texts, train_labels, test_labels, near=near, threshold=threshold,
                       ngram=ngram, num_perm=num_perm, seed=seed)
    records = []
    for found in leaks:
        test_label, train_label = test_labels[found.test_index], train_labels[found.train_index]
        records.append({
            "test_line": test_rows[found.test_index][0],
            "train_line": train_rows[found.train_index][0],
            "kind": found.kind,
            "jaccard": round(found.jaccard, 4),
            "jaccard_estimate": None if found.jaccard_estimate is None else round(found.jaccard_estimate, 4),
            "test_text": test_texts[found.test_index],
            "train_text": train_texts[found.train_index],
            "test_label": test_label,
            "train_label": train_label,
            "labels_agree": None if test_label is None or train_label is None else test_label == train_label,
            "train_matches": found.train_matches,
        })
    if output:
        write_jsonl(output, records)
    counts = Counter(r["kind"] for r in records)
    disagree = sum(r["labels_agree"] is False for r in records)
    report = {
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
        **{kind: counts.get(kind, 0) for kind in KINDS},
        "leaked": len(records),
        "share": len(records) / len(test_rows),
        "labels_disagree": disagree,
        "labels_compared": sum(r["labels_agree"] is not None for r in records),
        "threshold": threshold if near else None,
        "ngram": ngram if near else None,
    }
    print(leakage_summary(report, test, output))
    return report


def leakage_summary(report: dict[str, Any], test: str, output: Optional[str]) -> str:
    """The one-paragraph summary ``data leakage`` prints."""
    n = report["test_rows"]
    parts = [f"{report['exact']:,} exact ({share(report['exact'], n)})",
             f"{report['normalised']:,} more after normalisation ({share(report['normalised'], n)})"]
    if report["threshold"] is not None:
        grams = (f"{report['ngram']}-grams" if report["ngram"] else
                 f"{CJK_NGRAM}-grams for CJK texts, {OTHER_NGRAM}-grams for others")
        plural = "" if report["near"] == 1 else "s"
        parts.append(f"{report['near']:,} more near-duplicate{plural} ({share(report['near'], n)}; Jaccard >= "
                     f"{report['threshold']:g} on character {grams})")
    else:
        parts.append("near-duplicates not searched (--no-near)")
    if report["leaked"] == 0:
        labels = ""
    elif report["labels_compared"] == 0:
        labels = " Labels not compared (no label field in one of the files)."
    else:
        labels = (f" The label differs from the train row's in {report['labels_disagree']:,} of "
                  f"{report['labels_compared']:,} of them.")
    where = f" Pairs -> {output}." if output else " (--output FILE lists the pairs.)"
    return (f"leakage: of {n:,} rows in {test}, {report['leaked']:,} ({share(report['leaked'], n)}) also occur in "
            f"train ({report['train_rows']:,} rows): " + ", ".join(parts) + "." + labels + where)


# --------------------------------------------------------------------------------------------------- noise

NOISE_FILES = {"review": "review.jsonl", "summary": "summary.json"}
CLEAN_FILES = {"dropped": "train_dropped.jsonl", "relabelled": "train_relabelled.jsonl"}


def noise(*, train: str, out: Optional[str] = None, write_clean: Optional[str] = None, text_field: str = "text",
          label_field: str = "label", folds: int = 5, seed: int = 0, c: float = 10.0, max_iter: int = 1000,
          top_k: int = 3) -> dict[str, Any]:
    """Suspect labels: train rows whose label disagrees with out-of-fold predictions (confident learning).

    Out-of-fold class probabilities from TF-IDF character 1-5-grams + logistic regression (stratified K folds), then
    cleanlab.filter.find_label_issues (prune by noise rate), most suspect (lowest probability of the given label)
    first. The review file holds each flagged row as it is in train (given label unchanged) plus an "al" field:
    rank, score, source (file:line), given_label, suggested_label, their probabilities, top_k. Edit the labels,
    then `fenlei al merge --train DIR/train_dropped.jsonl --labeled DIR/review.jsonl --out train_v2.jsonl` takes the
    reviewed rows back (merge drops the "al" field).

    Args:
        train: train file (.jsonl, .json, .csv or .tsv)
        out: folder for review.jsonl (flagged rows, most suspect first) and summary.json
        write_clean: folder for train_dropped.jsonl (flagged rows removed) and train_relabelled.jsonl (flagged rows
            given the suggested label; fields that follow the label, such as a label_id, follow it too)
        text_field: field holding the text
        label_field: field holding the given label
        folds: stratified folds of the out-of-fold predictions (every class needs at least this many rows)
        seed: seed of the fold assignment
        c: inverse regularisation strength of the logistic regression
        max_iter: iterations of the logistic regression's solver
        top_k: labels (with probabilities) kept per review row
    """
    import time

    from fenlei.data import noise as label_noise

    if c <= 0:
        raise DataError(f"--c must be positive, got {c}")
    if max_iter < 1 or top_k < 1:
        raise DataError(f"--max_iter and --top_k must be at least 1, got {max_iter} and {top_k}")
    outputs = ([Path(out) / name for name in NOISE_FILES.values()] if out else []) + (
        [Path(write_clean) / name for name in CLEAN_FILES.values()] if write_clean else [])
    for output in outputs:
        check_not_input(train, output)
    path = Path(train)
    rows = load(path)
    texts = [_field_text(path, lineno, row, text_field) for lineno, row in rows]
    labels = _labels(path, rows, label_field)
    lines = [lineno for lineno, _ in rows]
    label_noise.check_folds(labels, lines, folds, str(path))
    label_noise.import_learners()  # a missing package is reported before minutes of fitting
    label_names = sorted(set(labels), key=label_sort_key)
    started = time.perf_counter()
    suspects = label_noise.find_suspects(texts, labels, label_names, folds=folds, seed=seed, c=c, max_iter=max_iter)
    seconds = time.perf_counter() - started
    plain = [row for _, row in rows]
    flagged = len(suspects.ranked)
    report: dict[str, Any] = {
        "train": str(path), "rows": len(rows), "classes": len(label_names), "folds": folds, "seed": seed,
        "model": {"features": "TF-IDF, character 1-5-grams (sublinear tf, min_df 2)",
                  "classifier": f"LogisticRegression(C={c:g}, max_iter={max_iter})",
                  "flagging": "cleanlab.filter.find_label_issues(filter_by='prune_by_noise_rate', "
                              "return_indices_ranked_by='self_confidence')"},
        "oof_accuracy": round(suspects.accuracy(), 6),
        "flagged": flagged, "flagged_share": round(flagged / len(rows), 6),
        "per_class": label_noise.class_counts(labels, suspects, label_names),
        "seconds": round(seconds, 2), "versions": _versions("sklearn", "cleanlab"), "outputs": {},
    }
    if write_clean:
        dropped, relabelled, following = label_noise.derived_rows(plain, labels, suspects, label_names, label_field,
                                                                  text_field)
        folder = Path(write_clean)
        write_jsonl(folder / CLEAN_FILES["dropped"], dropped)
        write_jsonl(folder / CLEAN_FILES["relabelled"], relabelled)
        report["fields_following_label"] = following
        report["outputs"].update({key: str(folder / name) for key, name in CLEAN_FILES.items()})
    if out:
        folder = Path(out)
        write_jsonl(folder / NOISE_FILES["review"], label_noise.review_rows(plain, lines, str(path), suspects,
                                                                            label_names, top_k))
        report["outputs"].update({key: str(folder / name) for key, name in NOISE_FILES.items()})
        atomic_write_json(folder / NOISE_FILES["summary"], report)
    print(noise_summary(report))
    return report


def _versions(*modules: str) -> dict[str, str]:
    import importlib

    return {name: str(getattr(importlib.import_module(name), "__version__", "?")) for name in modules}


def noise_summary(report: dict[str, Any]) -> str:
    """The lines ``data noise`` prints."""
    n = report["rows"]
    head = (f"noise: {n:,} rows, {report['classes']} classes in {report['train']}; {report['folds']}-fold out-of-fold "
            f"TF-IDF + logistic regression agrees with the given label on {report['oof_accuracy']:.1%}; "
            f"{report['flagged']:,} rows ({share(report['flagged'], n)}) flagged as suspect labels (confident "
            f"learning, cleanlab) in {report['seconds']:.0f} s")
    outputs = report["outputs"]
    where = [f"review -> {outputs['review']}, summary -> {outputs['summary']}"] if "review" in outputs else []
    if "dropped" in outputs:
        where.append(f"dropped -> {outputs['dropped']}, relabelled -> {outputs['relabelled']}")
    return head + (". " + "; ".join(where) + "." if where else ". (--out DIR writes the review file.)")


# --------------------------------------------------------------------------------------------------- CLI

OPERATIONS = {"dedup": dedup, "mask": mask, "split": split, "stats": stats, "oversample": oversample,
              "augment": augment, "leakage": leakage, "noise": noise}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one data operation (``fenlei data OPERATION --help``); returns 0, raises DataError on bad input."""
    from fenlei.typed_cli import run_typed

    return run_typed(OPERATIONS, sys.argv[1:] if argv is None else argv, prog="fenlei data",
                     description="Data tools for labelled text files (JSONL or CSV/TSV in, JSONL out; inputs are "
                                 "never overwritten).")


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
