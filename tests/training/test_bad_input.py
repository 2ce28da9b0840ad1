"""Bad input files fail early with a DataError naming the file and line (or the field), in the DataModule and the CLI.

At the CLI a data error is one line on stderr, exit status 2, and no run directory is created.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from datamodules import DataError, TextClassificationDataModule
from fenlei.commands import main as fenlei_main
from tests.conftest import REPO_ROOT, make_rows, tiny_overrides, write_jsonl

QUICKSTART = REPO_ROOT / "configs" / "quickstart.yaml"


def _good_data(root: Path) -> Path:
    """A valid data dir: train (24 rows), validation (8) and test (8), four classes."""
    write_jsonl(root / "train.jsonl", make_rows(24, seed=1))
    write_jsonl(root / "validation.jsonl", make_rows(8, seed=2))
    write_jsonl(root / "test.jsonl", make_rows(8, seed=3))
    return root


def _replace_line(path: Path, lineno: int, content: str | bytes) -> None:
    """Replace 1-based line ``lineno`` of ``path`` (bytes allowed, for encoding errors)."""
    lines = path.read_bytes().split(b"\n")
    lines[lineno - 1] = content.encode("utf-8") if isinstance(content, str) else content
    path.write_bytes(b"\n".join(lines))


def _row(**fields: object) -> str:
    return json.dumps(fields, ensure_ascii=False)


@dataclass(frozen=True)
class Case:
    """A way to break a valid data dir and what the error must say."""

    id: str
    corrupt: Callable[[Path], None]
    where: str  # "file:line" or the field the message must name
    says: str  # a fragment of the explanation
    train_file: str = "train"


def _csv_with_extra_cell(root: Path) -> None:
    (root / "train.jsonl").unlink()
    rows = make_rows(8, seed=4)
    lines = ["text,label"] + [f"{r['text']},{r['label']}" for r in rows]
    lines[3] = "too many,cells,billing"  # line 4 of the file
    (root / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _csv_with_missing_cell(root: Path) -> None:
    (root / "train.jsonl").unlink()
    rows = make_rows(8, seed=4)
    lines = ["text,label"] + [f"{r['text']},{r['label']}" for r in rows]
    lines[5] = "only the text"  # line 6
    (root / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _unsupported_suffix(root: Path) -> None:
    (root / "train.txt").write_text("refund please\tbilling\n", encoding="utf-8")


CASES = [
    Case("malformed-jsonl", lambda d: _replace_line(d / "train.jsonl", 3, '{"text": "refund please", "label": '),
         "train.jsonl:3:", "malformed JSON"),
    Case("not-an-object", lambda d: _replace_line(d / "train.jsonl", 7, '["refund please", "billing"]'),
         "train.jsonl:7:", "expected a JSON object"),
    Case("missing-text-field", lambda d: _replace_line(d / "train.jsonl", 5, _row(txt="refund please", label="billing")),
         "train.jsonl:5:", "missing field 'text'"),
    Case("missing-label-field", lambda d: _replace_line(d / "validation.jsonl", 2, _row(text="refund please")),
         "validation.jsonl:2:", "missing field 'label'"),
    Case("null-label", lambda d: _replace_line(d / "train.jsonl", 9, _row(text="refund please", label=None)),
         "train.jsonl:9:", "'label' is null"),
    Case("empty-text", lambda d: _replace_line(d / "train.jsonl", 4, _row(text=" \t  ", label="billing")),
         "train.jsonl:4:", "empty text"),
    Case("empty-label", lambda d: _replace_line(d / "train.jsonl", 11, _row(text="refund", label="  ")),
         "train.jsonl:11:", "empty label"),
    Case("unknown-label-validation",
         lambda d: _replace_line(d / "validation.jsonl", 6, _row(text="refund please", label="refunds")),
         "validation.jsonl:6:", "label 'refunds' does not occur"),
    Case("unknown-label-test", lambda d: _replace_line(d / "test.jsonl", 7, _row(text="refund please", label="Billing")),
         "test.jsonl:7:", "label 'Billing' does not occur"),
    Case("non-utf8", lambda d: _replace_line(d / "train.jsonl", 6, b'{"text": "caf\xe9 refund", "label": "billing"}'),
         "train.jsonl:6:", "not valid UTF-8"),
    Case("non-utf8-validation", lambda d: _replace_line(d / "validation.jsonl", 8, b'{"text": "\xff\xfe", "label": "bug"}'),
         "validation.jsonl:8:", "not valid UTF-8"),
    Case("empty-file", lambda d: (d / "train.jsonl").write_bytes(b""), "train.jsonl", "empty"),
    Case("blank-lines-only", lambda d: (d / "test.jsonl").write_text("\n  \n\t\n\n"), "test.jsonl", "empty"),
    Case("csv-extra-cell", _csv_with_extra_cell, "train.csv:4:", "more cells than the 2 header columns"),
    Case("csv-missing-cell", _csv_with_missing_cell, "train.csv:6:", "'label'"),
    Case("missing-train-file", lambda d: (d / "train.jsonl").unlink(), "train_file", "no file 'train'"),
    Case("unsupported-suffix", _unsupported_suffix, "train.txt", "unsupported file type '.txt'", train_file="train.txt"),
]


def _relabel(path: Path, labels: dict[str, object]) -> None:
    """Rewrite every row's label through ``labels`` (e.g. to JSON integers)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    write_jsonl(path, [{**row, "label": labels[row["label"]]} for row in rows])


def _integer_labels(root: Path) -> None:
    for split in ("train", "validation", "test"):
        _relabel(root / f"{split}.jsonl", {"billing": 0, "bug": 1, "login": 2, "shipping": 3})


def _then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def corrupt(root: Path) -> None:
        for step in steps:
            step(root)
    return corrupt


def _one_class(root: Path) -> None:
    for split in ("train", "validation", "test"):
        _relabel(root / f"{split}.jsonl", dict.fromkeys(("billing", "bug", "login", "shipping"), "billing"))


def _string_numbers(root: Path) -> None:
    for split in ("train", "validation", "test"):
        _relabel(root / f"{split}.jsonl", {"billing": "0", "bug": "1", "login": "2", "shipping": "3"})


# Labels whose kinds differ (JSON integers, strings, floats, booleans) or that spell one number two ways: without
# data.init_args.label_type they would silently merge ("1" and 1) or split ("1" and "1.0") classes.
LABEL_CASES = [
    Case("label-int-and-string",
         _then(_integer_labels, lambda d: _replace_line(d / "validation.jsonl", 3, _row(text="refund", label="1"))),
         "validation.jsonl:3:", "labels of mixed kinds (integer, string)"),
    Case("label-int-and-padded-string",
         _then(_integer_labels, lambda d: _replace_line(d / "train.jsonl", 5, _row(text="refund", label=" 1"))),
         "train.jsonl:5:", "labels of mixed kinds (integer, string)"),
    Case("label-int-and-float",
         _then(_integer_labels, lambda d: _replace_line(d / "test.jsonl", 2, _row(text="refund", label=1.0))),
         "test.jsonl:2:", "labels of mixed kinds (integer, float)"),
    Case("label-string-and-boolean", lambda d: _replace_line(d / "train.jsonl", 6, _row(text="refund", label=True)),
         "train.jsonl:6:", "labels of mixed kinds (string, boolean)"),
    Case("label-number-spelled-twice",
         _then(_string_numbers, lambda d: _replace_line(d / "test.jsonl", 4, _row(text="refund", label="01"))),
         "test.jsonl:4:", "label '01' is the number '1'"),
    Case("label-number-with-decimals",
         _then(_string_numbers, lambda d: _replace_line(d / "train.jsonl", 9, _row(text="refund", label="1.0"))),
         "train.jsonl:9:", "label '1.0' is the number '1'"),
    Case("one-class", _one_class, "train.jsonl", "one class only ('billing')"),
    # Lone surrogates: JSON escapes that decode to no character (a tokenizer raises a TypeError on them).
    Case("surrogate-in-train-text",
         lambda d: _replace_line(d / "train.jsonl", 7, r'{"text": "refund \ud800 please", "label": "billing"}'),
         "train.jsonl:7:", "field 'text' holds a lone surrogate (U+D800 at character 7)"),
    Case("surrogate-in-test-label",
         lambda d: _replace_line(d / "test.jsonl", 3, r'{"text": "refund", "label": "bill\udc00ing"}'),
         "test.jsonl:3:", "field 'label' holds a lone surrogate (U+DC00"),
]
CASES += LABEL_CASES


@pytest.fixture(params=CASES, ids=[case.id for case in CASES])
def bad_case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Case, Path]:
    case: Case = request.param
    data_dir = _good_data(tmp_path / "data")
    case.corrupt(data_dir)
    return case, data_dir


def _assert_message(message: str, case: Case, data_dir: Path) -> None:
    assert case.where in message, message
    assert case.says in message, message
    if case.id == "missing-train-file":
        assert str(data_dir) in message, message  # names the folder it looked in
    # The file is named with its path, and the line is the first thing after it.
    if ":" in case.where and case.where.endswith(":"):
        file_name = case.where.split(":")[0]
        assert f"{data_dir / file_name}:" in message, message


def test_good_data_loads(tmp_path: Path) -> None:
    """The uncorrupted data dir is valid (so each case below fails for its own reason only)."""
    dm = TextClassificationDataModule(tokenizer="unused", data_dir=str(_good_data(tmp_path)))
    assert dm.num_classes == 4
    assert sum(dm.class_counts) == 24


def test_datamodule_raises_data_error(bad_case: tuple[Case, Path]) -> None:
    """The error appears at construction or at the first access of the linked properties, before setup()."""
    case, data_dir = bad_case
    with pytest.raises(DataError) as info:
        dm = TextClassificationDataModule(tokenizer="unused", data_dir=str(data_dir), train_file=case.train_file)
        _ = (dm.num_classes, dm.label_names, dm.class_counts)
    _assert_message(str(info.value), case, data_dir)


def test_data_error_is_a_value_error() -> None:
    assert issubclass(DataError, ValueError)


def test_unknown_label_names_fixed_label_list(tmp_path: Path) -> None:
    """With a fixed label list a train label outside it is reported with its line."""
    data_dir = _good_data(tmp_path)
    dm = TextClassificationDataModule(tokenizer="unused", data_dir=str(data_dir), labels=["billing", "bug", "login"])
    with pytest.raises(DataError, match=r"train\.jsonl:\d+: label 'shipping' does not occur in the label list"):
        _ = dm.class_counts


def test_duplicate_fixed_labels(tmp_path: Path) -> None:
    dm = TextClassificationDataModule(tokenizer="unused", data_dir=str(_good_data(tmp_path)), labels=["a", "b", "a"])
    with pytest.raises(DataError, match="duplicates"):
        _ = dm.num_classes


def test_cli_data_error_exits_2_without_run_dir(
    bad_case: tuple[Case, Path], tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fit` on bad data: exit status 2, the file and line on stderr, and no run directory left behind."""
    case, data_dir = bad_case
    run_dir = tmp_path / "run"
    args = ["fit", "--config", str(QUICKSTART), *tiny_overrides(tiny_model, data_dir, run_dir),
            f"--data.init_args.train_file={case.train_file}", "--trainer.max_epochs=1"]
    with pytest.raises(SystemExit) as exit_info:
        fenlei_main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "fenlei: error:" in err
    _assert_message(err, case, data_dir)
    assert "Traceback" not in err
    assert not (run_dir / "run_summary.json").exists()
    assert not (run_dir / "checkpoints").exists()
    assert not run_dir.exists(), sorted(p.name for p in run_dir.rglob("*"))


def _earlier_run(run_dir: Path) -> None:
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"earlier")
    (run_dir / "run_summary.json").write_text('{"earlier": true}')


def _fit_bad_train(tmp_path: Path, tiny_model: Path, run_dir: Path, capsys: pytest.CaptureFixture[str],
                   bad_line: str = "{not json") -> str:
    data_dir = _good_data(tmp_path / "data")
    _replace_line(data_dir / "train.jsonl", 3, bad_line)
    with pytest.raises(SystemExit) as exit_info:
        fenlei_main(["fit", "--config", str(QUICKSTART), *tiny_overrides(tiny_model, data_dir, run_dir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "train.jsonl:3:" in err and "Traceback" not in err
    return err


# A lone surrogate used to pass the reader, archive the earlier run and then end in the tokenizer's traceback.
@pytest.mark.parametrize("bad_line", ["{not json", r'{"text": "refund \ud800", "label": "billing"}'],
                         ids=["malformed", "lone-surrogate"])
def test_cli_bad_data_leaves_earlier_run_in_place(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], bad_line: str
) -> None:
    """A fit that fails on bad data leaves an earlier run untouched, where ``--ckpt_path best`` finds it."""
    run_dir = tmp_path / "run"
    _earlier_run(run_dir)
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    _fit_bad_train(tmp_path, tiny_model, run_dir, capsys, bad_line)
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == b"earlier"
    assert (run_dir / "run_summary.json").read_text() == '{"earlier": true}'
    assert not (run_dir / "previous").exists()
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before  # nothing created (no run.lock)


def test_explicit_validation_or_test_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    """A misspelt file name must not silently become a validation split (or no test set)."""
    from datamodules import TextClassificationDataModule
    from datamodules.readers import DataError as Error
    from tests.conftest import make_rows, write_jsonl

    write_jsonl(tmp_path / "train.jsonl", make_rows(8, seed=0))
    for field in ("val_file", "test_file"):
        with pytest.raises(Error, match=f"{field}: no file 'valdation'"):
            TextClassificationDataModule(tokenizer="unused", data_dir=str(tmp_path), **{field: "valdation"})
    dm = TextClassificationDataModule(tokenizer="unused", data_dir=str(tmp_path))  # defaults may be absent
    assert dm.val_path is None and dm.test_path is None and dm.num_classes == 4


def test_prompt_datamodule_names_a_lone_surrogate(tmp_path: Path) -> None:
    """The decoder DataModule reads its own rows; a lone surrogate is a DataError there too, before any setup."""
    from datamodules.prompt_classification import PromptClassificationDataModule

    data_dir = _good_data(tmp_path)
    _replace_line(data_dir / "validation.jsonl", 4, r'{"text": "refund \udfff", "label": "billing"}')
    dm = PromptClassificationDataModule(tokenizer="unused", data_dir=str(data_dir))
    with pytest.raises(DataError, match=r"validation\.jsonl:4: field 'text' holds a lone surrogate \(U\+DFFF"):
        _ = dm.class_counts
