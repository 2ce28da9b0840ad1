"""Suspect labels: training rows whose given label disagrees with out-of-fold predictions (confident learning).

The model is deliberately cheap and independent of the classifier being trained: TF-IDF over character 1-5-grams
and a multinomial logistic regression (scikit-learn), fitted K times in stratified folds so that every row is
scored by a model that never saw it (a row's own label cannot vouch for itself). ``cleanlab.filter.find_label_issues``
then flags rows by confident learning (Northcutt et al. 2021): per-class thresholds (the mean predicted probability
of a class over the rows labelled with it) give the confident joint of given and likely-true labels, and the rows it
counts as off-diagonal are pruned, most suspect first (lowest self-confidence: the out-of-fold probability of the
given label). A flagged row's suggested label is its out-of-fold argmax; cleanlab never flags a row whose argmax is
its given label.

The vectorizer is fitted once on every text, not per fold: IDF weights read no labels, so nothing of a held-out
row's label reaches its score, and it saves K vocabulary passes. Character n-grams need no tokenizer, so Chinese
and English go through the same path (no word segmentation).

Torch-free; scikit-learn and cleanlab (the ``[data]`` extra) are imported only when the suspects are computed.
``fenlei data noise`` (:func:`fenlei.data.tools.noise`) reads and writes the files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from datamodules.readers import DataError

FOLDS = 5
SEED = 0
NGRAM_RANGE = (1, 5)
MIN_DF = 2  # an n-gram seen in one text only cannot help score another
# Inverse regularisation strength of the logistic regression. Measured on banking77 train with 10% of the labels
# flipped (benchmarks/label_noise.py); cleanlab's thresholds are per class, so the overall scale of the
# probabilities matters less than their ranking within a class.
C = 10.0
MAX_ITER = 1000
TOP_K = 3
# The field of a review row that holds the review details. It is ``fenlei al``'s queue field
# (fenlei.ops.active_learning.QUEUE_FIELD, not imported: that module pulls numpy-heavy scoring code), so that
# ``fenlei al merge`` strips it when the reviewed rows are merged back (tests/data/test_noise.py checks they match).
REVIEW_FIELD = "al"
STRATEGY = "label_noise"
RELABELLED_FROM = "relabelled_from"


def import_learners() -> tuple[Any, Any]:
    """(sklearn, cleanlab.filter), or a one-line DataError naming the extra that brings them."""
    try:
        import sklearn  # noqa: F401
        from sklearn import feature_extraction, linear_model, model_selection  # noqa: F401
    except ImportError:
        raise DataError("data noise needs scikit-learn and cleanlab: pip install 'fenlei[data]' "
                        "(or pip install scikit-learn cleanlab)") from None
    try:
        from cleanlab import filter as cleanlab_filter
    except ImportError:
        raise DataError("data noise needs the cleanlab package: pip install 'fenlei[data]' (or pip install cleanlab)"
                        ) from None
    return sklearn, cleanlab_filter


def check_folds(labels: Sequence[str], lines: Sequence[int], folds: int, where: str) -> None:
    """Every class needs a row in each fold (else a fold's model has no column for it): at least ``folds`` rows.
    The error names each short class, its count and its first line (``where`` is the file)."""
    if folds < 2:
        raise DataError(f"--folds must be at least 2, got {folds}")
    counts = Counter(labels)
    if len(counts) < 2:
        raise DataError(f"{where}: {len(counts)} class in the label field; finding suspect labels needs at least 2")
    first: dict[str, int] = {}
    for label, line in zip(labels, lines, strict=True):
        first.setdefault(label, line)
    short = [label for label in counts if counts[label] < folds]
    if short:
        shown = ", ".join(f"{where}:{first[label]}: class {label!r} has {counts[label]} row(s)" for label in short[:5])
        more = f" (and {len(short) - 5} more classes)" if len(short) > 5 else ""
        raise DataError(f"{shown}{more}; every class needs at least --folds {folds} rows (one in each fold): lower "
                        "--folds, or add rows to that class or drop it")


def out_of_fold_probs(texts: Sequence[str], y: np.ndarray, n_classes: int, *, folds: int = FOLDS, seed: int = SEED,
                      c: float = C, max_iter: int = MAX_ITER) -> np.ndarray:
    """(N, n_classes) class probabilities, each row from the fold model that did not train on it."""
    import_learners()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    min_df = MIN_DF if len(texts) >= 2 * MIN_DF else 1
    try:
        features = TfidfVectorizer(analyzer="char", ngram_range=NGRAM_RANGE, min_df=min_df, sublinear_tf=True,
                                   lowercase=True, dtype=np.float32).fit_transform(texts)
    except ValueError as err:  # every text empty: "empty vocabulary"
        raise DataError(f"no character n-grams to learn from ({err})") from None
    probs = np.zeros((len(texts), n_classes), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_index, held_index in splitter.split(np.zeros(len(y)), y):
        model = LogisticRegression(C=c, max_iter=max_iter)
        model.fit(features[train_index], y[train_index])
        probs[np.ix_(held_index, model.classes_)] = model.predict_proba(features[held_index])
    return probs


def rank_suspects(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices of the rows cleanlab flags (prune by noise rate), most suspect (lowest self-confidence) first."""
    _, cleanlab_filter = import_learners()
    ranked = cleanlab_filter.find_label_issues(labels=y, pred_probs=probs, filter_by="prune_by_noise_rate",
                                               return_indices_ranked_by="self_confidence", n_jobs=1, verbose=False)
    return np.asarray(ranked, dtype=np.int64)


@dataclass(frozen=True)
class Suspects:
    """The out-of-fold probabilities and the flagged rows (indices into the input, most suspect first)."""

    probs: np.ndarray
    y: np.ndarray
    ranked: np.ndarray

    @property
    def suggested(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def accuracy(self) -> float:
        """How often the out-of-fold argmax equals the given label."""
        return float((self.suggested == self.y).mean())


def find_suspects(texts: Sequence[str], labels: Sequence[str], label_names: Sequence[str], *, folds: int = FOLDS,
                  seed: int = SEED, c: float = C, max_iter: int = MAX_ITER) -> Suspects:
    index = {name: i for i, name in enumerate(label_names)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    probs = out_of_fold_probs(texts, y, len(label_names), folds=folds, seed=seed, c=c, max_iter=max_iter)
    return Suspects(probs, y, rank_suspects(y, probs))


# --------------------------------------------------------------------------------------------------- rows


def label_following_fields(rows: Sequence[dict[str, Any]], labels: Sequence[str], skip: Sequence[str]) -> list[str]:
    """Fields (other than ``skip``) present in every row whose value is a function of the label throughout the file,
    such as TNEWS's ``label_id`` and ``label_en``: a relabelled row takes the new label's value of each, so that
    the row does not contradict itself."""
    candidates = [f for f in rows[0] if f not in skip] if rows else []
    out = []
    for field in candidates:
        seen: dict[str, Any] = {}
        for row, label in zip(rows, labels, strict=True):
            value = row.get(field, ...)
            if value is ... or isinstance(value, (dict, list)) or seen.setdefault(label, value) != value:
                break
        else:
            out.append(field)
    return out


def review_rows(rows: Sequence[dict[str, Any]], lines: Sequence[int], source: str, suspects: Suspects,
                label_names: Sequence[str], top_k: int = TOP_K) -> list[dict[str, Any]]:
    """One row per flagged row, most suspect first: the input row unchanged (its given label in the label field)
    and a ``REVIEW_FIELD`` with rank, score (1 - self-confidence), file:line, given and suggested label, their
    out-of-fold probabilities and the top-k."""
    out = []
    k = max(1, min(top_k, len(label_names)))
    for rank, i in enumerate(suspects.ranked):
        p = suspects.probs[i]
        given, suggested = int(suspects.y[i]), int(p.argmax())
        top = np.argsort(-p, kind="stable")[:k]
        out.append({**rows[i], REVIEW_FIELD: {
            "rank": rank,
            "score": round(1.0 - float(p[given]), 6),
            "strategy": STRATEGY,
            "source": f"{source}:{lines[i]}",
            "train_line": lines[i],
            "given_label": label_names[given],
            "suggested_label": label_names[suggested],
            "given_confidence": round(float(p[given]), 6),
            "suggested_confidence": round(float(p[suggested]), 6),
            "top_k": [{"label": label_names[j], "score": round(float(p[j]), 6)} for j in top],
        }})
    return out


def derived_rows(rows: Sequence[dict[str, Any]], labels: Sequence[str], suspects: Suspects,
                 label_names: Sequence[str], label_field: str, text_field: str
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(dropped, relabelled, following fields): the input without the flagged rows, and the input with each flagged
    row given its suggested label (the value as the file spells it, e.g. an int, plus the fields that follow the
    label, and ``relabelled_from``: the given value)."""
    flagged = set(int(i) for i in suspects.ranked)
    following = label_following_fields(rows, labels, (label_field, text_field))
    exemplar: dict[str, dict[str, Any]] = {}
    for row, label in zip(rows, labels, strict=True):
        exemplar.setdefault(label, row)
    suggested = suspects.suggested
    dropped = [row for i, row in enumerate(rows) if i not in flagged]
    relabelled = []
    for i, row in enumerate(rows):
        if i not in flagged:
            relabelled.append(row)
            continue
        model = exemplar[label_names[int(suggested[i])]]
        new = dict(row)
        new[label_field] = model[label_field]
        for field in following:
            new[field] = model[field]
        new[RELABELLED_FROM] = row[label_field]
        relabelled.append(new)
    return dropped, relabelled, following


def class_counts(labels: Sequence[str], suspects: Suspects, label_names: Sequence[str],
                 order: Optional[Sequence[str]] = None) -> dict[str, dict[str, int]]:
    """Per class: rows with that given label, of them flagged, and flagged rows suggested into that class."""
    rows = Counter(labels)
    flagged = Counter(label_names[int(suspects.y[i])] for i in suspects.ranked)
    into = Counter(label_names[int(suspects.suggested[i])] for i in suspects.ranked)
    return {name: {"rows": rows[name], "flagged": flagged[name], "suggested_into": into[name]}
            for name in (order or label_names)}
