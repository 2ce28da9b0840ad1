"""Active learning: exact selection order per strategy on hand-made probabilities, queue contents, skipping of
known and repeated texts, and merge without duplicates (torch-free, fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fenlei.ops import active_learning as al
from tests.conftest import fenlei_user_error, write_jsonl

# Rows chosen so the three strategies disagree:
#   row 0: [0.40, 0.35, 0.25]  least confidence 0.60, margin gap 0.05, entropy 1.0805
#   row 1: [0.50, 0.50, 0.00]  0.50, gap 0.00, entropy 0.6931
#   row 2: [0.34, 0.33, 0.33]  0.66, gap 0.01, entropy 1.0985
#   row 3: [0.90, 0.05, 0.05]  0.10, gap 0.85, entropy 0.3944
#   row 4: [0.40, 0.30, 0.30]  0.60 (ties row 0), gap 0.10, entropy 1.0889
PROBS = np.array([
    [0.40, 0.35, 0.25],
    [0.50, 0.50, 0.00],
    [0.34, 0.33, 0.33],
    [0.90, 0.05, 0.05],
    [0.40, 0.30, 0.30],
])


@pytest.mark.parametrize(
    ("strategy", "order"),
    [
        ("least_confidence", [2, 0, 4, 1, 3]),  # rows 0 and 4 tie at 0.60: lower row index first
        ("margin", [1, 2, 0, 4, 3]),
        ("entropy", [2, 4, 0, 1, 3]),
    ],
)
def test_selection_order_per_strategy(strategy: str, order: list[int]) -> None:
    scores = al.uncertainty_scores(PROBS, strategy)
    assert al.select_indices(scores, 5) == order
    assert al.select_indices(scores, 2) == order[:2]


def test_score_values() -> None:
    assert np.allclose(al.uncertainty_scores(PROBS, "least_confidence"), [0.6, 0.5, 0.66, 0.1, 0.6])
    assert np.allclose(al.uncertainty_scores(PROBS, "margin"), [0.95, 1.0, 0.99, 0.15, 0.9])
    entropy = -(PROBS * np.log(np.clip(PROBS, 1e-12, 1))).sum(axis=1)
    assert np.allclose(al.uncertainty_scores(PROBS, "entropy"), entropy)
    assert abs(al.uncertainty_scores(np.array([[0.5, 0.5]]), "entropy")[0] - np.log(2)) < 1e-12
    with pytest.raises(ValueError, match="unknown strategy"):
        al.uncertainty_scores(PROBS, "random")


def test_ties_break_by_row_index_and_eligibility_filters() -> None:
    scores = np.array([0.3, 0.7, 0.7, 0.1, 0.7])
    assert al.select_indices(scores, 3) == [1, 2, 4]
    eligible = np.array([True, True, False, True, True])
    assert al.select_indices(scores, 3, eligible) == [1, 4, 0]
    assert al.duplicate_mask(["a", "b", "a", "c", "b"], known={"c"}).tolist() == [False, False, True, True, True]


class FakeScorer:
    """Probabilities looked up by text, so the test fixes exactly what the model says."""

    label_names = ["billing", "login", "bug"]
    n_params = 0
    name = "fake"

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table
        self.seen: list[str] = []

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        self.seen += list(texts)
        return np.array([self.table[t] for t in texts])


def select_args(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    base = {"pool": str(tmp_path / "pool.jsonl"), "out": str(tmp_path / "queue.jsonl"), "train": None, "n": 3,
            "strategy": "margin", "text_field": "text", "top_k": 2, "batch_size": 4}
    base.update(kw)
    return base


def test_select_skips_train_and_repeated_rows_and_keeps_original_fields(tmp_path: Path) -> None:
    pool = [
        {"text": "refund my card", "ticket": "T1"},          # 0: in train (normalized)
        {"text": "password locked", "ticket": "T2"},         # 1: margin 1.0
        {"text": "app crash", "ticket": "T3"},               # 2: margin 0.7
        {"text": "Password  locked!", "ticket": "T4"},       # 3: repeat of row 1
        {"text": "late package", "ticket": "T5"},            # 4: margin 0.1 (confident)
        {"text": "screen broken", "ticket": "T6"},           # 5: margin 0.9
    ]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    write_jsonl(tmp_path / "train.jsonl", [{"text": "Refund my card.", "label": "billing"}])
    scorer = FakeScorer({
        "password locked": [0.4, 0.4, 0.2], "app crash": [0.6, 0.1, 0.3], "late package": [0.1, 0.0, 0.9],
        "screen broken": [0.2, 0.35, 0.45],
    })
    report = al.select_queue(**select_args(tmp_path, train=str(tmp_path / "train.jsonl")), load_scorer=lambda: scorer)
    assert report == {"pool": 6, "skipped_in_train": 1, "skipped_repeated": 1, "scored": 4, "selected": 3,
                      "strategy": "margin"}
    assert "refund my card" not in scorer.seen and "Password  locked!" not in scorer.seen
    queue = [json.loads(line) for line in (tmp_path / "queue.jsonl").read_text().splitlines()]
    assert [q["ticket"] for q in queue] == ["T2", "T6", "T3"]
    first = queue[0]
    assert first["text"] == "password locked" and first["al"]["rank"] == 0 and first["al"]["pool_line"] == 2
    assert first["al"]["score"] == 1.0 and first["al"]["strategy"] == "margin"
    prediction = first["al"]["prediction"]
    assert prediction["label"] == prediction["predicted_label"] == "billing"  # tie: first class
    assert prediction["confidence"] == 0.4 and prediction["top_k"][0] == {"label": "billing", "score": 0.4}
    assert [t["label"] for t in queue[1]["al"]["prediction"]["top_k"]] == ["bug", "login"]
    assert "label" not in first


def test_select_refuses_to_overwrite_the_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(tmp_path / "pool.jsonl", [{"text": "a"}])
    error = fenlei_user_error(["al", "select", "--run", str(tmp_path), "--pool", str(tmp_path / "pool.jsonl"), "--n",
                               "1", "--out", str(tmp_path / "pool.jsonl")], capsys)
    assert "refusing to overwrite the input" in error
    both = ["al", "select", "--run", "r", "--bundle", "b", "--pool", "p.jsonl", "--n", "1", "--out", "q.jsonl"]
    assert "exactly one of --bundle and --run" in fenlei_user_error(both, capsys)


def test_merge_adds_labeled_rows_without_duplicates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = [{"text": "Refund my card", "label": "billing"}, {"text": "password reset", "label": "login"},
             {"text": "screen freeze", "label": "bug"}]
    labeled = [
        {"text": "refund my card!", "label": "billing", "al": {"rank": 0}},    # already in train (normalized)
        {"text": "app crash", "label": " bug ", "ticket": "T3", "al": {"rank": 1}},
        {"text": "App crash.", "label": "bug", "al": {"rank": 2}},             # repeat within the labeled file
        {"text": "late package", "label": "shipping", "al": {"rank": 3}},      # a label new to train
    ]
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "labeled.jsonl", labeled)
    before = (tmp_path / "train.jsonl").read_bytes()
    code = al.main(["merge", "--train", str(tmp_path / "train.jsonl"), "--labeled", str(tmp_path / "labeled.jsonl"),
                    "--out", str(tmp_path / "train_v2.jsonl"), "--report", str(tmp_path / "report.json")])
    assert code == 0
    merged = [json.loads(line) for line in (tmp_path / "train_v2.jsonl").read_text().splitlines()]
    assert merged[:3] == train
    assert merged[3:] == [{"text": "app crash", "label": "bug", "ticket": "T3"},
                          {"text": "late package", "label": "shipping"}]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == {"train": 3, "labeled": 4, "added": 2, "skipped_in_train": 1, "skipped_repeated": 1,
                      "output": 5, "new_labels": ["shipping"]}
    assert (tmp_path / "train.jsonl").read_bytes() == before
    assert "added 2" in capsys.readouterr().out


def test_merge_refuses_rows_without_label_and_writes_nothing(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a b", "label": "x"}])
    write_jsonl(tmp_path / "labeled.jsonl", [{"text": "c", "label": "x"}, {"text": "d"}, {"text": "e", "label": " "},
                                             {"text": "f", "label": None}])
    err = fenlei_user_error(["al", "merge", "--train", str(tmp_path / "train.jsonl"), "--labeled",
                             str(tmp_path / "labeled.jsonl"), "--out", str(tmp_path / "out.jsonl")], capsys)
    assert "3 row(s) without a label in field 'label' (lines 2, 3, 4)" in err and "labeled.jsonl" in err
    assert not (tmp_path / "out.jsonl").exists()
    err = fenlei_user_error(["al", "merge", "--train", str(tmp_path / "train.jsonl"), "--labeled",
                             str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "train.jsonl")], capsys)
    assert "refusing to overwrite the input" in err


def test_ops_modules_import_nothing_heavy() -> None:
    """`al merge`, `sweep --dry_run` and argument errors must not pay for torch/lightning/transformers imports."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = ("import sys; sys.path.insert(0, '.'); import fenlei.ops.active_learning, fenlei.ops.sweep, fenlei.ops.ablate, fenlei.ops.compare; "
            "print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
