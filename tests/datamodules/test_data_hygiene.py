"""The DataModules other than TextClassificationDataModule apply its data checks (datamodules.labels and
datamodules.text_limits): the decoder's PromptClassificationDataModule refuses label fields of mixed kinds (unless
``label_type`` is set), a field with one training class and a validation value the model cannot learn, each as one
DataError naming the file and line; NumericTargetDataModule refuses a binning that leaves one training class and
non-numbers among its targets; both cut long texts by characters before tokenizing, with one file:line warning."""

from __future__ import annotations

import json
import random
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from datamodules import DataError
from datamodules.numeric_target import NumericTargetDataModule
from datamodules.prompt_classification import PromptClassificationDataModule
from tests.conftest import CLASS_WORDS, FILLER, make_rows, write_jsonl

URGENCY = {"billing": 0, "bug": 1, "login": 2, "shipping": 3}  # JSON integers, as in real ticket data


def _prompt_rows(n: int, seed: int) -> list[dict[str, Any]]:
    return [{**row, "urgency": URGENCY[row["label"]]} for row in make_rows(n, seed)]


def _prompt_data(root: Path) -> Path:
    write_jsonl(root / "train.jsonl", _prompt_rows(24, seed=1))
    write_jsonl(root / "validation.jsonl", _prompt_rows(8, seed=2))
    write_jsonl(root / "test.jsonl", _prompt_rows(8, seed=3))
    return root


def _set(path: Path, line: int, **fields: Any) -> None:
    """Change fields of the record on 1-based ``line`` of a JSONL file."""
    rows = [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines()]
    rows[line - 1].update(fields)
    write_jsonl(path, rows)


def _prompt_dm(data_dir: Path, tokenizer: str = "unused", **kwargs: Any) -> PromptClassificationDataModule:
    return PromptClassificationDataModule(tokenizer=tokenizer, data_dir=str(data_dir),
                                          label_fields=kwargs.pop("label_fields", ["label", "urgency"]), **kwargs)


def _linked(dm: Any) -> None:
    """What LightningCLI reads at instantiate time, before any Trainer or run directory exists."""
    _ = (dm.num_classes, dm.label_names, dm.class_counts)


def test_good_prompt_data_loads(tmp_path: Path) -> None:
    dm = _prompt_dm(_prompt_data(tmp_path))
    _linked(dm)
    assert dm.field_labels == [["billing", "bug", "login", "shipping"], ["0", "1", "2", "3"]]


@pytest.mark.parametrize(("file", "line", "fields", "says"), [
    ("validation.jsonl", 3, {"urgency": "1"}, "label '1' of field 'urgency' is a string but the label at"),
    ("test.jsonl", 2, {"urgency": 1.0}, "labels of mixed kinds (integer, float)"),
    ("train.jsonl", 6, {"label": True}, "label 'True' of field 'label' is a boolean"),
    ("train.jsonl", 9, {"urgency": " 1"}, "labels of mixed kinds (integer, string)"),
], ids=["int-and-string", "int-and-float", "string-and-boolean", "int-and-padded-string"])
def test_prompt_label_fields_of_mixed_kinds_are_refused(tmp_path: Path, file: str, line: int,
                                                        fields: dict[str, Any], says: str) -> None:
    data_dir = _prompt_data(tmp_path)
    _set(data_dir / file, line, **fields)
    with pytest.raises(DataError) as info:
        _linked(_prompt_dm(data_dir))
    message = str(info.value)
    assert message.startswith(f"{data_dir / file}:{line}: "), message
    assert says in message and "data.init_args.label_type" in message and "\n" not in message


def test_prompt_number_spelled_two_ways_is_refused(tmp_path: Path) -> None:
    data_dir = _prompt_data(tmp_path)
    for split in ("train", "validation", "test"):
        rows = [json.loads(t) for t in (data_dir / f"{split}.jsonl").read_text().splitlines()]
        write_jsonl(data_dir / f"{split}.jsonl", [{**r, "urgency": str(r["urgency"])} for r in rows])
    _set(data_dir / "train.jsonl", 7, urgency="02")
    with pytest.raises(DataError, match=r"train\.jsonl:7: label '02' of field 'urgency' is the number '2'"):
        _linked(_prompt_dm(data_dir))


def test_prompt_label_type_reads_a_mixed_column(tmp_path: Path) -> None:
    """``label_type: int`` reads "01", " 1" and 1.0 as 1 (before label_maps); ``str`` keeps every spelling apart."""
    data_dir = _prompt_data(tmp_path)
    _set(data_dir / "validation.jsonl", 3, urgency="01")
    _set(data_dir / "train.jsonl", 5, urgency=" 1")
    dm = _prompt_dm(data_dir, label_type={"urgency": "int"}, label_maps={"urgency": {"01": "high", 0: "high"}})
    _linked(dm)
    assert dm.field_labels[1] == ["2", "3", "high"]  # 1 -> high under int, whatever its spelling
    dm = _prompt_dm(data_dir, label_type="str", test_file=None, val_file=None)
    _linked(dm)
    assert dm.field_labels[1] == ["0", "1", "2", "3"]  # " 1" is stripped, as always
    with pytest.raises(DataError, match="label_type: must be one of str, int or null, got 'float'"):
        _prompt_dm(data_dir, label_type="float")
    with pytest.raises(DataError, match=r"label_type: field\(s\) \['urgncy'\] are not in label_fields"):
        _prompt_dm(data_dir, label_type={"urgncy": "int"})
    with pytest.raises(DataError, match=r"train\.jsonl:1: field 'label': label 'billing' is not an integer"):
        _linked(_prompt_dm(data_dir, label_type="int"))  # one label_type for every field
    _set(data_dir / "train.jsonl", 2, urgency="soon")
    with pytest.raises(DataError, match=r"train\.jsonl:2: field 'urgency': label 'soon' is not an integer"):
        _linked(_prompt_dm(data_dir, label_type={"urgency": "int"}))


@pytest.mark.parametrize("field", ["label", "urgency"])
def test_prompt_field_with_one_training_class_is_refused(tmp_path: Path, field: str) -> None:
    data_dir = _prompt_data(tmp_path)
    for split in ("train", "validation", "test"):
        rows = [json.loads(t) for t in (data_dir / f"{split}.jsonl").read_text().splitlines()]
        write_jsonl(data_dir / f"{split}.jsonl", [{**r, field: r[field] if split == "test" else "x"} for r in rows])
    with pytest.raises(DataError) as info:
        _linked(_prompt_dm(data_dir, label_type="str"))
    assert str(info.value) == (f"{data_dir / 'train.jsonl'}: the training split has one class only ('x') of field "
                               f"{field!r}; a classifier needs examples of at least two")


def test_prompt_validation_value_the_model_cannot_learn_is_refused(tmp_path: Path) -> None:
    """Only in validation (or outside a fixed list): refused with its line; a test value unseen in train is still
    allowed there (scored as wrong, see test_generative_classifier)."""
    data_dir = _prompt_data(tmp_path)
    _set(data_dir / "validation.jsonl", 6, label="refunds")
    with pytest.raises(DataError, match=r"validation\.jsonl:6: label 'refunds' of field 'label' does not occur in "
                                        r"the training data \(4 labels\)"):
        _linked(_prompt_dm(data_dir))
    fixed = {"label": ["billing", "bug", "login", "refunds", "shipping"]}
    with pytest.raises(DataError, match=r"validation\.jsonl:6: label 'refunds' of field 'label' has no example in "
                                        r"the training split, so the model cannot learn it"):
        _linked(_prompt_dm(data_dir, labels=fixed))
    with pytest.raises(DataError, match=r"train\.jsonl:1: label 'billing' of field 'label' does not occur in the "
                                        r"label list"):
        _linked(_prompt_dm(data_dir, labels={"label": ["bug", "login", "shipping"]}))
    with pytest.raises(DataError, match="labels: the fixed label list of field 'urgency' has duplicates"):
        _linked(_prompt_dm(data_dir, labels={"urgency": ["1", "01", "2"]}, label_type={"urgency": "int"}))

    data_dir = _prompt_data(tmp_path / "unseen_in_test")
    _set(data_dir / "test.jsonl", 4, label="refunds", urgency=7)
    dm = _prompt_dm(data_dir)
    _linked(dm)
    assert [r.values for r in dm._splits["test"]][3] == ["refunds", "7"]


def _long_text(words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(CLASS_WORDS["billing"] + FILLER) for _ in range(words))


@pytest.fixture(scope="module")
def decoder_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.decoder_support import make_tokenizer

    directory = tmp_path_factory.mktemp("decoder_tokenizer")
    make_tokenizer().save_pretrained(directory)
    return directory


def test_prompt_long_texts_are_cut_by_characters_with_a_file_line_warning(tmp_path: Path,
                                                                          decoder_tokenizer: Path) -> None:
    data_dir = _prompt_data(tmp_path)
    long_text = _long_text(20_000, seed=1)  # ~110k characters
    _set(data_dir / "train.jsonl", 5, text=long_text)
    _set(data_dir / "train.jsonl", 9, text=_long_text(3_000, seed=2))
    dm = _prompt_dm(data_dir, str(decoder_tokenizer), max_length=16)
    with pytest.warns(UserWarning) as caught:
        _linked(dm)
    messages = [str(w.message) for w in caught if "cut to" in str(w.message)]
    assert len(messages) == 1, messages  # the train file is read once
    assert messages[0].startswith(f"{data_dir / 'train.jsonl'}:5: text of {len(long_text)} characters cut to 512 "
                                  "before tokenizing (max_length 16 x 32 characters"), messages[0]
    assert "2 of 24 texts in this file were cut" in messages[0]
    cut = next(r for r in dm._train_file_records if r.line == 5)
    assert len(cut.text) == 512 and long_text.startswith(cut.text)
    # The text keeps the max_length tokens it had whole; texts from elsewhere are cut alike.
    tokens = dm.tokenizer([long_text, cut.text], add_special_tokens=False)["input_ids"]
    assert tokens[0][:16] == tokens[1][:16]
    assert dm.encode_prompt(long_text) == dm.encode_prompt(cut.text)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _linked(_prompt_dm(_prompt_data(tmp_path / "short"), max_length=16))  # short texts pass silently
    dm = _prompt_dm(data_dir, max_chars=10, test_file=None, val_file=None)
    with pytest.warns(UserWarning, match=r"train\.jsonl:1: text of \d+ characters cut to 10 before tokenizing "
                                         r"\(data\.init_args\.max_chars\); 24 of 24 texts"):
        _linked(dm)
    with pytest.raises(DataError, match="max_chars: must be at least 1, got 0"):
        _prompt_dm(data_dir, max_chars=0)


# ---- NumericTargetDataModule: a TextClassificationDataModule with bins for classes ----


def _numeric_data(root: Path, targets: list[Any]) -> Path:
    rows = [{"text": row["text"], "label": target} for row, target in zip(make_rows(len(targets), 1), targets,
                                                                          strict=True)]
    write_jsonl(root / "train.jsonl", rows)
    return root


def _numeric_dm(data_dir: Path, **kwargs: Any) -> NumericTargetDataModule:
    return NumericTargetDataModule(tokenizer="unused", data_dir=str(data_dir), val_file=None, test_file=None, **kwargs)


def test_numeric_targets_in_one_bin_are_refused(tmp_path: Path) -> None:
    data_dir = _numeric_data(tmp_path, [5] * 20)
    with pytest.raises(DataError) as info:
        _linked(_numeric_dm(data_dir))
    message = str(info.value)
    assert message.startswith(f"{data_dir / 'train.jsonl'}: the training split has one class only ('0: [5, 5]')")
    assert "gives 1 bin(s)" in message and "\n" not in message
    manual = {"scheme": "manual", "edges": [0, 100, 200]}
    with pytest.raises(DataError, match="one class only"):
        _linked(_numeric_dm(_numeric_data(tmp_path / "manual", list(range(20))), binning=manual))


def test_numeric_targets_may_mix_number_kinds_but_not_booleans(tmp_path: Path) -> None:
    """The label-kind check is for classes; a target is a number however JSON writes it (3, 3.5, "4")."""
    targets: list[Any] = [i if i % 3 else str(i) for i in range(20)]
    targets[4] = 4.5
    dm = _numeric_dm(_numeric_data(tmp_path, targets))
    _linked(dm)
    assert len(dm.train_targets) == 18 and set(dm.train_targets.tolist()) <= {float(t) for t in targets}
    targets[7] = True
    data_dir = _numeric_data(tmp_path / "boolean", targets)
    with pytest.raises(DataError, match=re.escape(f"{data_dir / 'train.jsonl'}:8: field 'label' must be a number, "
                                                  "got 'True'")):
        _linked(_numeric_dm(data_dir))


def test_numeric_long_texts_are_cut_with_a_file_line_warning(tmp_path: Path) -> None:
    data_dir = _numeric_data(tmp_path, list(range(20)))
    _set(data_dir / "train.jsonl", 3, text=_long_text(2_000, seed=3))
    with pytest.warns(UserWarning, match=re.escape(f"{data_dir / 'train.jsonl'}:3: text of ") + r"\d+ characters cut "
                                         r"to 512 before tokenizing \(max_length 16 x 32 characters.*1 of 20 texts"):
        _linked(_numeric_dm(data_dir, max_length=16))
