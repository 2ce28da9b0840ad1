"""``fenlei data leakage`` and the leakage warning at the start of ``fit``: tiny files written here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fenlei.data import tools as data_tools
from fenlei.data.leakage import SplitTexts, find_leaks, overlap_counts, share, split_leak_warnings
from fenlei.data.normalize import normalize_text
from tests.conftest import REPO_ROOT, fenlei_user_error, write_jsonl

LONG = "the quick brown fox jumps over the lazy dog near the river bank"
TRAIN = [
    {"text": "Hello, world!", "label": "greet"},
    {"text": LONG, "label": "animal"},
    {"text": "你好，世界。欢迎光临本店", "label": "greet"},
    {"text": "Ｉ ｌｏｖｅ ｔｈｉｓ ＣＡＦＥ", "label": "food"},
    {"text": "my card was declined at the shop", "label": "card"},
    {"text": "my card was declined at the shop", "label": "payment"},  # exact duplicate, other label
]
TEST = [
    {"text": "Hello, world!", "label": "greet"},  # 1: exact
    {"text": "i love this cafe!!", "label": "food"},  # 2: normalised (full width, case, punctuation)
    {"text": "你好 世界 欢迎光临本店", "label": "other"},  # 3: normalised, label differs
    {"text": LONG.replace("bank", "banks"), "label": "animal"},  # 4: near
    {"text": "something completely different", "label": "greet"},  # 5: no match
    {"text": "my card was declined at the shop", "label": "payment"},  # 6: exact, two train rows
    {"text": "!!!", "label": "greet"},  # 7: punctuation only: no leak
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    return write_jsonl(tmp_path / "train.jsonl", TRAIN), write_jsonl(tmp_path / "test.jsonl", TEST)


def test_normalize_text_casefolds() -> None:
    assert normalize_text("STRASSE") == normalize_text("Straße") == "strasse"
    assert normalize_text("  ＡＢＣ，１２３！ ") == "abc 123"


def test_exact_normalised_near_pairs(files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train, test = files
    out = tmp_path / "pairs.jsonl"
    report = data_tools.main(["leakage", "--train", str(train), "--test", str(test), "--output", str(out)])
    assert report == 0
    summary = capsys.readouterr().out.strip()
    assert "\n" not in summary  # one paragraph
    assert f"of 7 rows in {test}, 5 (71.4%) also occur in train (6 rows)" in summary
    assert "2 exact (28.6%), 2 more after normalisation (28.6%), 1 more near-duplicate (14.3%" in summary
    assert "differs from the train row's in 1 of 5" in summary and str(out) in summary
    pairs = {p["test_line"]: p for p in read_jsonl(out)}
    assert {line: p["kind"] for line, p in pairs.items()} == {1: "exact", 2: "normalised", 3: "normalised",
                                                               4: "near", 6: "exact"}
    assert pairs[1] == {"test_line": 1, "train_line": 1, "kind": "exact", "jaccard": 1.0, "jaccard_estimate": None,
                        "test_text": "Hello, world!", "train_text": "Hello, world!", "test_label": "greet",
                        "train_label": "greet", "labels_agree": True, "train_matches": 1}
    assert pairs[2]["train_line"] == 4 and pairs[2]["labels_agree"] is True
    assert pairs[3]["labels_agree"] is False and pairs[3]["train_label"] == "greet"
    near = pairs[4]
    assert near["train_line"] == 2 and 0.8 <= near["jaccard"] < 1.0 and 0.6 < near["jaccard_estimate"] <= 1.0
    # Two train rows match; the one with the test row's label is shown.
    assert pairs[6]["train_matches"] == 2 and pairs[6]["train_line"] == 6 and pairs[6]["labels_agree"] is True


def test_no_leak_writes_an_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "nothing like the train rows", "label": "x"}])
    out = tmp_path / "pairs.jsonl"
    data_tools.main(["leakage", "--train", str(train), "--test", str(test), "--output", str(out)])
    assert f"of 1 rows in {test}, 0 (0%) also occur in train" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8") == ""


def test_threshold_ngram_and_no_near(files: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    train, test = files
    strict = data_tools.leakage(train=str(train), test=str(test), threshold=0.99)
    assert (strict["exact"], strict["normalised"], strict["near"]) == (2, 2, 0)
    loose = data_tools.leakage(train=str(train), test=str(test), ngram=3, threshold=0.5)
    assert loose["near"] >= 1
    plain = data_tools.leakage(train=str(train), test=str(test), near=False)
    assert plain["near"] == 0 and plain["leaked"] == 4
    assert "near-duplicates not searched (--no-near)" in capsys.readouterr().out


def test_text_field_and_csv_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = tmp_path / "train.csv"
    train.write_text("title,label\nHello there,a\nbye,b\n", encoding="utf-8")
    test = write_jsonl(tmp_path / "test.jsonl", [{"title": "hello THERE.", "label": "b"}])  # no "text" field
    report = data_tools.leakage(train=str(train), test=str(test), text_field="title")
    assert report["normalised"] == 1 and report["labels_disagree"] == 1


def test_unlabelled_test_file(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "Hello, world!"}])
    out = tmp_path / "pairs.jsonl"
    report = data_tools.leakage(train=str(train), test=str(test), output=str(out))
    assert report["exact"] == 1 and report["labels_compared"] == 0
    assert read_jsonl(out)[0]["test_label"] is None and read_jsonl(out)[0]["labels_agree"] is None


def test_bad_line_is_a_one_line_error(files: tuple[Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    train, _ = files
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "broken\n', encoding="utf-8")
    argv = ["data", "leakage", "--train", str(train), "--test", str(bad), "--output", str(tmp_path / "o.jsonl")]
    assert f"fenlei: error: {bad}:2: malformed JSON" in fenlei_user_error(argv, capsys)
    assert not (tmp_path / "o.jsonl").exists()
    no_field = write_jsonl(tmp_path / "nofield.jsonl", [{"text": "x"}, {"body": "y"}])
    argv = ["data", "leakage", "--train", str(no_field), "--test", str(train)]
    assert f"{no_field}:2: missing field 'text'" in fenlei_user_error(argv, capsys)
    argv = ["data", "leakage", "--train", str(train), "--test", str(train), "--output", str(train)]
    assert "refusing to overwrite the input" in fenlei_user_error(argv, capsys)
    argv = ["data", "leakage", "--train", str(train), "--test", str(train), "--threshold", "1.5"]
    assert "--threshold must be in (0, 1]" in fenlei_user_error(argv, capsys)


def test_missing_datasketch_is_a_one_line_error(files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "datasketch", None)  # import datasketch raises ImportError
    train, test = files
    error = fenlei_user_error(["data", "leakage", "--train", str(train), "--test", str(test)], capsys)
    assert "needs the datasketch package: pip install 'fenlei[data]'" in error
    assert data_tools.leakage(train=str(train), test=str(test), near=False)["leaked"] == 4  # works without it


def test_find_leaks_counts_each_test_row_once_under_its_strongest_kind() -> None:
    leaks = find_leaks(["a b c d e f g h", "A b c d e f g h!"], ["a b c d e f g h", "x"], ["p", "q"], ["q", "p"])
    assert [(leak.test_index, leak.kind, leak.train_matches) for leak in leaks] == [(0, "exact", 1)]


def test_cli_is_torch_free(files: tuple[Path, Path]) -> None:
    train, test = files
    code = (
        "import sys; from fenlei.data import tools as data_tools; "
        f"rc = data_tools.main(['leakage', '--train', {str(train)!r}, '--test', {str(test)!r}]); "
        "heavy = [m for m in ('torch', 'lightning', 'transformers') if m in sys.modules]; "
        "assert rc == 0 and not heavy, (rc, heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------------------------- fit warning


def test_share_formatting() -> None:
    assert (share(49, 12493), share(1, 5000), share(0, 10), share(25, 3080)) == ("0.4%", "<0.1%", "0%", "0.8%")


def test_overlap_counts_exact_and_normalised() -> None:
    assert overlap_counts(["Hello, world!", "abc"], ["Hello, world!", "hello world", "ABC.", "new", "..."]) == (1, 3)


def test_split_leak_warnings_one_line_per_split(tmp_path: Path) -> None:
    train, val, test = tmp_path / "train.jsonl", tmp_path / "validation.jsonl", tmp_path / "test.jsonl"
    splits = {
        "train": SplitTexts(["Hello, world!", "abc", "def"], train),
        "validation": SplitTexts(["something new"], val),
        "test": SplitTexts(["Hello, world!", "ABC!", "new 1", "new 2"], test),
    }
    only_normalised = split_leak_warnings({**splits, "test": SplitTexts(["hello world"], test)})
    assert "1 of 1 test rows (100.0%) also occur in train after normalisation (none exactly)" in only_normalised[0]
    lines = split_leak_warnings(splits)
    assert lines == [
        f"fenlei: 2 of 4 test rows (50.0%) also occur in train after normalisation (1 of them exactly); fenlei data leakage "
        f"--train {train} --test {test} --output leakage.jsonl lists them, near-duplicates too"
    ]
    lines = split_leak_warnings({**splits, "validation": SplitTexts(["def"], train, from_train=True)}, ["title"])
    assert lines[0].startswith("fenlei: 1 of 1 validation rows (100.0%) also occur in train after normalisation "
                               "(1 of them exactly); the validation split is drawn from")
    assert f"drawn from {train}" in lines[0] and "fenlei data dedup" in lines[0]
    assert "--text_field title" in lines[1]


def test_fit_warns_through_the_datamodule(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every fenlei classification DataModule offers split_texts(); FenleiCLI.before_fit prints the warnings."""
    from datamodules import TextClassificationDataModule
    from fenlei.training.cli import FenleiCLI

    rows = [{"text": f"row number {i}", "label": "ab"[i % 2]} for i in range(20)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", [{"text": "fresh text", "label": "a"}])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "ROW number 3!", "label": "b"}, {"text": "row number 4", "label": "a"},
                                          {"text": "unseen", "label": "a"}])
    dm = TextClassificationDataModule(tokenizer="/nonexistent/tokenizer", data_dir=str(tmp_path))  # never loaded
    FenleiCLI.before_fit(SimpleNamespace(datamodule=dm))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fenlei: 2 of 3 test rows (66.7%) also occur in train after normalisation (1 of them exactly); fenlei "
                   f"data leakage --train {tmp_path / 'train.jsonl'} --test {tmp_path / 'test.jsonl'} --output "
                   "leakage.jsonl lists them, near-duplicates too"]
    FenleiCLI.before_fit(SimpleNamespace(datamodule=object()))  # a DataModule without split_texts: no warning
    assert capsys.readouterr().err == ""


def test_prompt_datamodule_offers_split_texts(tmp_path: Path) -> None:
    """The generative classifiers' DataModule gives the same texts; a validation split drawn from train is named so."""
    from datamodules import PromptClassificationDataModule
    from fenlei.data.leakage import warn_split_leakage

    rows = [{"text": f"row number {i % 10}", "label": "ab"[i % 2]} for i in range(40)]  # every text four times
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", [{"text": "Row number 1.", "label": "b"}])
    dm = PromptClassificationDataModule(tokenizer="unused", data_dir=str(tmp_path))
    texts = dm.split_texts()
    assert set(texts) == {"train", "validation", "test"} and texts["validation"]["from_train"]
    assert texts["test"]["texts"] == ["Row number 1."] and texts["test"]["path"] == tmp_path / "test.jsonl"
    lines = warn_split_leakage(dm)
    assert len(lines) == 2 and "validation split is drawn from" in lines[0] and "1 of 1 test rows" in lines[1]
