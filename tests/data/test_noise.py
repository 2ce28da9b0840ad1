"""``fenlei data noise``: planted label flips are found, the review file merges back through ``fenlei al merge``,
and bad input is a one-line error. Tiny synthetic files (three topics with their own words), written here."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fenlei.data import noise as label_noise
from fenlei.data import tools as data_tools
from tests.conftest import REPO_ROOT, fenlei_user_error, write_jsonl

TOPICS = {
    "card": ["card", "declined", "payment", "atm", "pin", "contactless", "blocked", "charge"],
    "travel": ["flight", "hotel", "airport", "luggage", "visa", "booking", "train", "passport"],
    "food": ["pizza", "pasta", "salad", "dessert", "menu", "waiter", "kitchen", "soup"],
}
FILLER = ["my", "the", "please", "help", "with", "today", "again", "why", "is"]
PER_CLASS = 40
# (row index, label it is flipped to): rows 3, 50 and 95 are a card, a travel and a food text.
FLIPS = {3: "travel", 50: "food", 95: "card"}


def synthetic_rows(seed: int = 0) -> tuple[list[dict], dict[int, str]]:
    """Rows grouped by topic, with FLIPS applied; returns the rows and each flipped row's true label."""
    rng = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        for _ in range(PER_CLASS):
            text = " ".join(rng.sample(words, 4) + rng.sample(FILLER, 2))
            rows.append({"text": text, "label": label})
    truth = {}
    for index, wrong in FLIPS.items():
        truth[index] = rows[index]["label"]
        assert truth[index] != wrong
        rows[index] = {**rows[index], "label": wrong}
    return rows, truth


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[int, str]]:
    """One ``data noise`` run over the synthetic file, with --out and --write_clean (shared: the fits take seconds)."""
    folder = tmp_path_factory.mktemp("noise")
    rows, truth = synthetic_rows()
    for i, row in enumerate(rows):
        row["label_id"] = list(TOPICS).index(row["label"])  # follows the label
        row["id"] = i
    train = write_jsonl(folder / "train.jsonl", rows)
    report = data_tools.noise(train=str(train), out=str(folder / "out"), write_clean=str(folder / "clean"), folds=4)
    return folder, report, truth


def test_planted_flips_are_flagged_first_with_the_true_label_suggested(run: tuple[Path, dict, dict[int, str]]) -> None:
    folder, report, truth = run
    review = read_jsonl(folder / "out" / "review.jsonl")
    flagged = {row["id"]: row for row in review}
    assert set(truth) <= set(flagged), (sorted(truth), sorted(flagged))
    assert len(review) == report["flagged"] <= 6  # the clean rows are not flagged wholesale
    top = {row["id"] for row in review[: len(truth)]}
    assert top == set(truth)  # the flips are the most suspect rows
    for index, true_label in truth.items():
        details = flagged[index]["al"]
        assert details["suggested_label"] == true_label and details["given_label"] == FLIPS[index]
        assert details["source"] == f"{folder / 'train.jsonl'}:{index + 1}" and details["train_line"] == index + 1
        assert details["suggested_confidence"] > details["given_confidence"]
        assert details["score"] == pytest.approx(1 - details["given_confidence"], abs=1e-6)
        assert details["strategy"] == "label_noise" and len(details["top_k"]) == 3
        assert flagged[index]["label"] == FLIPS[index]  # the review row keeps the given label
    assert [row["al"]["rank"] for row in review] == list(range(len(review)))
    scores = [row["al"]["given_confidence"] for row in review]
    assert scores == sorted(scores)  # ranked by self-confidence
    summary = json.loads((folder / "out" / "summary.json").read_text())
    assert summary["flagged"] == len(review) and summary["rows"] == 3 * PER_CLASS and summary["folds"] == 4
    assert summary["per_class"]["card"]["flagged"] == sum(r["al"]["given_label"] == "card" for r in review)
    assert 0.9 < summary["oof_accuracy"] < 1.0


def test_derived_training_sets(run: tuple[Path, dict, dict[int, str]]) -> None:
    folder, report, truth = run
    rows = read_jsonl(folder / "train.jsonl")
    flagged = {row["id"] for row in read_jsonl(folder / "out" / "review.jsonl")}
    dropped = read_jsonl(folder / "clean" / "train_dropped.jsonl")
    assert [row["id"] for row in dropped] == [row["id"] for row in rows if row["id"] not in flagged]
    relabelled = read_jsonl(folder / "clean" / "train_relabelled.jsonl")
    assert len(relabelled) == len(rows)
    assert report["fields_following_label"] == ["label_id"]
    for index, true_label in truth.items():
        row = relabelled[index]
        assert row["label"] == true_label and row["label_id"] == list(TOPICS).index(true_label)
        assert row["relabelled_from"] == FLIPS[index]
    untouched = [r for r in relabelled if r["id"] not in flagged]
    assert untouched == [r for r in rows if r["id"] not in flagged]


def test_review_file_merges_back_through_al_merge(run: tuple[Path, dict, dict[int, str]], tmp_path: Path) -> None:
    from fenlei.ops.active_learning import QUEUE_FIELD, merge

    assert label_noise.REVIEW_FIELD == QUEUE_FIELD  # merge strips exactly this field
    folder, _, truth = run
    reviewed = []
    for row in read_jsonl(folder / "out" / "review.jsonl"):  # a reviewer accepts every suggestion
        reviewed.append({**row, "label": row["al"]["suggested_label"]})
    labeled = write_jsonl(tmp_path / "reviewed.jsonl", reviewed)
    counts = merge(train=str(folder / "clean" / "train_dropped.jsonl"), labeled=str(labeled),
                   out=str(tmp_path / "train_v2.jsonl"))
    assert counts["added"] == len(reviewed) and counts["new_labels"] == []
    merged = read_jsonl(tmp_path / "train_v2.jsonl")
    assert all("al" not in row for row in merged)
    by_id = {row["id"]: row for row in merged}
    assert len(by_id) == 3 * PER_CLASS
    assert all(by_id[index]["label"] == true_label for index, true_label in truth.items())
    relabelled = {row["id"]: row["label"] for row in read_jsonl(folder / "clean" / "train_relabelled.jsonl")}
    assert {i: row["label"] for i, row in by_id.items()} == relabelled


def test_integer_labels_keep_their_type(tmp_path: Path) -> None:
    rows, truth = synthetic_rows()
    numbered = [{"text": row["text"], "label": list(TOPICS).index(row["label"])} for row in rows]
    train = write_jsonl(tmp_path / "train.jsonl", numbered)
    data_tools.noise(train=str(train), write_clean=str(tmp_path / "clean"), folds=4)
    relabelled = read_jsonl(tmp_path / "clean" / "train_relabelled.jsonl")
    for index, true_label in truth.items():
        assert relabelled[index]["label"] == list(TOPICS).index(true_label)
        assert relabelled[index]["relabelled_from"] == list(TOPICS).index(FLIPS[index])


def test_bad_input_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows, _ = synthetic_rows()
    no_text = write_jsonl(tmp_path / "no_text.jsonl", [*rows[:5], {"body": "x", "label": "card"}, *rows[5:]])
    assert f"{no_text}:6: missing field 'text'" in fenlei_user_error(["data", "noise", "--train", str(no_text)], capsys)
    short = write_jsonl(tmp_path / "short.jsonl", [*rows, {"text": "a rare one", "label": "rare"},
                                                   {"text": "another rare one", "label": "rare"}])
    error = fenlei_user_error(["data", "noise", "--train", str(short), "--folds", "5"], capsys)
    assert f"{short}:{len(rows) + 1}: class 'rare' has 2 row(s)" in error and "at least --folds 5 rows" in error
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    assert "--folds must be at least 2" in fenlei_user_error(["data", "noise", "--train", str(train), "--folds", "1"],
                                                             capsys)
    one_class = write_jsonl(tmp_path / "one.jsonl", [{"text": f"t {i}", "label": "a"} for i in range(10)])
    assert "needs at least 2" in fenlei_user_error(["data", "noise", "--train", str(one_class)], capsys)
    empty_label = write_jsonl(tmp_path / "empty.jsonl", [*rows[:2], {"text": "x", "label": " "}])
    assert f"{empty_label}:3: empty label" in fenlei_user_error(["data", "noise", "--train", str(empty_label)], capsys)
    assert "--c must be positive" in fenlei_user_error(["data", "noise", "--train", str(train), "--c", "0"], capsys)


def test_output_may_not_replace_the_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows, _ = synthetic_rows()
    train = write_jsonl(tmp_path / "train_dropped.jsonl", rows)
    error = fenlei_user_error(["data", "noise", "--train", str(train), "--write_clean", str(tmp_path)], capsys)
    assert "refusing to overwrite the input" in error


def test_missing_cleanlab_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab raises ImportError
    train = write_jsonl(tmp_path / "train.jsonl", synthetic_rows()[0])
    error = fenlei_user_error(["data", "noise", "--train", str(train), "--out", str(tmp_path / "o")], capsys)
    assert "needs the cleanlab package: pip install 'fenlei[data]'" in error
    assert not (tmp_path / "o").exists()


def test_command_defaults_are_the_module_constants() -> None:
    import inspect

    params = inspect.signature(data_tools.noise).parameters
    assert (params["folds"].default, params["seed"].default, params["c"].default, params["max_iter"].default,
            params["top_k"].default) == (label_noise.FOLDS, label_noise.SEED, label_noise.C, label_noise.MAX_ITER,
                                         label_noise.TOP_K)


def test_cli_is_torch_free(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", synthetic_rows()[0])
    code = (
        "import sys; from fenlei.data import tools as data_tools; "
        f"rc = data_tools.main(['noise', '--train', {str(train)!r}, '--folds', '3']); "
        "heavy = [m for m in ('torch', 'lightning', 'transformers') if m in sys.modules]; "
        "assert rc == 0 and not heavy, (rc, heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "flagged as suspect labels" in done.stdout
