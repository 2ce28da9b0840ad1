"""TextClassificationDataModule: file formats, label vocabulary, the stratified split, padding and sampling."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from datamodules import TextClassificationDataModule
from datamodules.sampler import LengthGroupedSampler
from tests.conftest import CLASS_WORDS, FILLER, make_rows, make_vocab, write_jsonl

# A tokenizer name that cannot load: proves that label properties never need the tokenizer.
NO_TOKENIZER = "/nonexistent/tokenizer"


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WordPiece tokenizer over the conftest vocabulary, built from a vocab dict.

    (transformers 5 ignores ``vocab_file=``, so this does not rely on the tiny model's tokenizer knowing words.)
    """
    from transformers import BertTokenizerFast

    directory = tmp_path_factory.mktemp("word_tokenizer")
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(make_vocab())}, do_lower_case=True)
    assert tokenizer.tokenize("refund") == ["refund"]
    tokenizer.save_pretrained(directory)
    return directory


def _write_table(path: Path, rows: list[dict[str, Any]], delimiter: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _datamodule(data_dir: Path, tokenizer: str | Path = NO_TOKENIZER, **kwargs: Any) -> TextClassificationDataModule:
    return TextClassificationDataModule(tokenizer=str(tokenizer), data_dir=str(data_dir), **kwargs)


def _texts_labels(dm: TextClassificationDataModule, split: str) -> list[tuple[str, str | None]]:
    return [(r.text, r.label) for r in dm.split_records(split)]


def _varied_rows(n: int, seed: int, max_words: int = 60) -> list[dict[str, Any]]:
    """Rows whose texts range from 1 to ``max_words`` in-vocabulary words (one token each)."""
    rng = random.Random(seed)
    labels = list(CLASS_WORDS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = [rng.choice(CLASS_WORDS[label])] + [rng.choice(FILLER) for _ in range(rng.randint(0, max_words - 1))]
        rows.append({"id": i, "text": " ".join(words), "label": label})
    return rows


def _loader_indices(loader: DataLoader) -> list[int]:
    return [int(i) for batch in loader for i in batch["index"]]


# ---- reading ----


def test_jsonl_csv_tsv_give_same_records(tmp_path: Path) -> None:
    """The same rows (quotes, commas, non-ASCII text included) read identically from .jsonl, .csv and .tsv."""
    rows = make_rows(20, seed=5)
    rows[3]["text"] = 'a "quoted", comma text'
    rows[4]["text"] = "退款 还没 到账"
    results = {}
    for suffix in ("jsonl", "csv", "tsv"):
        directory = tmp_path / suffix
        if suffix == "jsonl":
            write_jsonl(directory / "train.jsonl", rows)
        else:
            _write_table(directory / f"train.{suffix}", rows, "," if suffix == "csv" else "\t")
        dm = _datamodule(directory, val_file=None, test_file=None)
        assert dm.train_path.suffix == f".{suffix}"
        results[suffix] = [(r.text, r.label) for r in dm._train_file_records]
    expected = [(r["text"], r["label"]) for r in rows]
    assert results["jsonl"] == expected
    assert results["csv"] == expected
    assert results["tsv"] == expected


def test_csv_line_numbers_count_the_header(tmp_path: Path) -> None:
    """CSV record line numbers are file line numbers (the header is line 1), so errors point at the right line."""
    _write_table(tmp_path / "train.csv", make_rows(4, seed=0), ",")
    dm = _datamodule(tmp_path, val_file=None, test_file=None)
    assert [r.line for r in dm._train_file_records] == [2, 3, 4, 5]


def test_two_text_fields_are_joined(tmp_path: Path) -> None:
    """text_fields=[title, body] joins both with the separator; an empty part is skipped."""
    rows = [
        {"title": "Refund", "body": "card was charged twice", "label": "billing"},
        {"title": "Locked", "body": "cannot login", "label": "login"},
        {"title": "", "body": "no title here", "label": "login"},
    ]
    write_jsonl(tmp_path / "train.jsonl", rows)
    dm = _datamodule(tmp_path, text_fields=["title", "body"], text_separator=" [SEP] ", val_file=None, test_file=None)
    assert [r.text for r in dm._train_file_records] == [
        "Refund [SEP] card was charged twice",
        "Locked [SEP] cannot login",
        "no title here",
    ]


def test_integer_labels_become_strings_sorted_numerically(tmp_path: Path) -> None:
    """JSON integer labels are strings in the vocabulary, ordered 1 < 2 < 10 (not '10' < '2')."""
    rows = [{"text": f"text {i}", "label": label} for i, label in enumerate([10, 2, 1, 2, 10, 10, 1, 2])]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", [{"text": "v", "label": 10}, {"text": "w", "label": 2}])
    dm = _datamodule(tmp_path, test_file=None)
    assert dm.label_names == ["1", "2", "10"]
    assert dm.label_to_id == {"1": 0, "2": 1, "10": 2}
    assert dm.class_counts == [2, 3, 3]
    assert [r.label for r in dm.split_records("validation")] == ["10", "2"]


def test_mixed_labels_numbers_first(tmp_path: Path) -> None:
    """Integers and strings in one column need ``label_type: str`` (refused otherwise, see test_bad_input)."""
    rows = [{"text": f"t{i}", "label": label} for i, label in enumerate(["b", 3, "a", 20] * 2)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    dm = _datamodule(tmp_path, val_file=None, test_file=None, label_type="str")
    assert dm.label_names == ["3", "20", "a", "b"]


LABEL_SPELLINGS = [1, "1", " 1", "1.0", True, "01", 1.0, 2, "2"]


def test_label_type_str_keeps_every_spelling_apart(tmp_path: Path) -> None:
    """``str``: as written (whitespace stripped, as ever), so ``1`` and ``" 1"`` are one class, ``"01"`` another."""
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": v} for i, v in enumerate(LABEL_SPELLINGS * 2)])
    dm = _datamodule(tmp_path, val_file=None, test_file=None, label_type="str")
    assert dm.label_names == ["01", "1", "2", "1.0", "True"]
    assert dm.class_counts == [1, 5, 3, 3, 1]  # the split moved one of every class with 2+ rows to validation


def test_label_type_int_reads_every_spelling_as_one_integer(tmp_path: Path) -> None:
    spellings = [v for v in LABEL_SPELLINGS if v is not True]
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": v} for i, v in enumerate(spellings * 2)])
    write_jsonl(tmp_path / "validation.jsonl", [{"text": "v", "label": "+2"}, {"text": "w", "label": " 01 "}])
    dm = _datamodule(tmp_path, test_file=None, label_type="int", labels=["2", "01"])
    assert dm.label_names == ["2", "1"]  # the fixed list is read as integers too
    assert dm.class_counts == [4, 12]
    assert [r.label for r in dm.split_records("validation")] == ["2", "1"]


@pytest.mark.parametrize(("bad", "says"), [(True, "is a boolean"), ("1.5", "'1.5' is not an integer"),
                                           ("one", "'one' is not an integer"), (2.5, "'2.5' is not an integer")])
def test_label_type_int_refuses_what_is_no_integer(tmp_path: Path, bad: object, says: str) -> None:
    from datamodules import DataError

    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 2}, {"text": "c", "label": bad}])
    with pytest.raises(DataError, match=rf"train\.jsonl:3: label .*{says}"):
        _ = _datamodule(tmp_path, val_file=None, test_file=None, label_type="int").label_names


def test_label_type_is_documented_in_the_cli_help() -> None:
    """The option and its choices show in ``fenlei fit --help`` (jsonargparse reads the docstring)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(TextClassificationDataModule, "data")
    text = " ".join(parser.format_help().split())
    assert "--data.label_type" in text and "every label is read as an integer" in text
    assert "mixes kinds" in text and "--data.max_chars" in text and "max_length * 32" in text


def _long_text(words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(CLASS_WORDS["billing"] + FILLER) for _ in range(words))


def test_long_texts_are_cut_by_characters_before_tokenizing(tmp_path: Path, word_tokenizer: Path) -> None:
    """Over ``max_length * 32`` characters a text is cut on reading, with one warning per file naming the first cut
    line and the count; the tokens that truncation keeps are the same as from the whole text."""
    rows = make_rows(12, seed=1)
    rows[4]["text"] = _long_text(20_000, seed=1)  # ~110k characters
    rows[9]["text"] = _long_text(3_000, seed=2)
    write_jsonl(tmp_path / "train.jsonl", rows)
    dm = _datamodule(tmp_path, word_tokenizer, val_file=None, test_file=None, max_length=16)
    with pytest.warns(UserWarning) as caught:
        records = dm.split_records("train")
    messages = [str(w.message) for w in caught if "cut to" in str(w.message)]
    assert len(messages) == 1, messages
    where = f"{tmp_path / 'train.jsonl'}:5: text of {len(rows[4]['text'])} characters cut to 512 before tokenizing"
    assert where in messages[0], messages[0]
    assert "2 of 12 texts in this file were cut" in messages[0] and "max_length 16 x 32" in messages[0]
    assert max(len(r.text) for r in dm._train_file_records) == 512
    cut = next(r for r in dm._train_file_records if r.line == 5)
    assert rows[4]["text"].startswith(cut.text)
    whole = dm.tokenizer([rows[4]["text"]], truncation=True, max_length=16)["input_ids"][0]
    assert dm._tokenize([cut])[0] == whole
    assert dm.model_text(rows[4]["text"]) == cut.text  # texts from elsewhere (load_run.encode) are cut alike
    assert records  # the split still has every row


def test_max_chars_sets_the_limit_and_short_texts_pass_silently(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    from datamodules import DataError

    write_jsonl(tmp_path / "train.jsonl", make_rows(8, seed=1))
    _ = _datamodule(tmp_path, val_file=None, test_file=None).label_names
    assert not [w for w in recwarn if "cut to" in str(w.message)]
    dm = _datamodule(tmp_path, val_file=None, test_file=None, max_chars=10)
    with pytest.warns(UserWarning, match=r"train\.jsonl:1: text of \d+ characters cut to 10 before tokenizing "
                                         r"\(data\.init_args\.max_chars\); 8 of 8 texts"):
        _ = dm.label_names
    with pytest.raises(DataError, match="max_chars: must be at least 1, got 0"):
        _datamodule(tmp_path, max_chars=0)


def test_label_properties_available_after_init(tmp_path: Path) -> None:
    """num_classes, label_names and class_counts need neither setup() nor a loadable tokenizer."""
    train = make_rows(40, seed=1)
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "validation.jsonl", make_rows(8, seed=2))
    write_jsonl(tmp_path / "test.jsonl", make_rows(8, seed=3))
    dm = _datamodule(tmp_path)
    assert dm.num_classes == 4
    assert dm.label_names == sorted(CLASS_WORDS)
    expected = Counter(r["label"] for r in train)
    assert dm.class_counts == [expected[label] for label in dm.label_names]
    assert sum(dm.class_counts) == 40
    assert dm.datasets == {}
    assert "tokenizer" not in vars(dm)  # not loaded (cached_property)


def test_fixed_label_list_sets_order_and_counts_absent_classes(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", make_rows(8, seed=1, labels=["login", "billing"]))
    dm = _datamodule(tmp_path, labels=["shipping", "login", "billing"], val_file=None, test_file=None)
    assert dm.label_names == ["shipping", "login", "billing"]
    assert dm.num_classes == 3
    assert dm.class_counts[0] == 0
    assert sum(dm.class_counts) == len(dm.split_records("train"))


def test_labels_run_file_round_trips(tmp_path: Path) -> None:
    """labels.json holds the vocabulary in class-id order, non-ASCII labels included."""
    labels = ["退款", "登录", "物流", "10", "2"]
    rows = [{"text": f"text {i}", "label": labels[i % len(labels)]} for i in range(15)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    dm = _datamodule(tmp_path / "data", val_file=None, test_file=None)
    from fenlei.training.run_dir import RunDir

    RunDir(tmp_path / "run").write_run_files(dm.run_files())
    path = tmp_path / "run" / "labels.json"
    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert loaded == dm.label_names == ["2", "10", "物流", "登录", "退款"]
    assert "退款" in path.read_text(encoding="utf-8")


# ---- stratified validation split ----

SPLIT_COUNTS = {"a": 50, "b": 20, "c": 10, "d": 2, "e": 1}


def _split_data(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    rows = [{"text": f"{label} example {i}", "label": label} for label, n in SPLIT_COUNTS.items() for i in range(n)]
    random.Random(0).shuffle(rows)
    write_jsonl(tmp_path / "train.jsonl", rows)
    return tmp_path, rows


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_split_is_stratified(tmp_path: Path, fraction: float) -> None:
    """Without a validation file every class (>= 2 examples) loses about val_fraction of its rows to validation."""
    data_dir, rows = _split_data(tmp_path)
    dm = _datamodule(data_dir, val_fraction=fraction, seed=3, test_file=None)
    assert dm.val_path is None
    val_counts = Counter(label for _, label in _texts_labels(dm, "validation"))
    for label, n in SPLIT_COUNTS.items():
        if n >= 2:
            assert val_counts[label] >= 1, label
            assert val_counts[label] <= n - 1, label  # the class stays learnable
            assert abs(val_counts[label] - fraction * n) <= 1, (label, val_counts[label])
        else:
            assert val_counts[label] == 0
    train_counts = Counter(label for _, label in _texts_labels(dm, "train"))
    assert dm.class_counts == [train_counts[label] for label in dm.label_names]
    assert dm.class_counts == [SPLIT_COUNTS[label] - val_counts[label] for label in dm.label_names]


def test_split_partitions_train_file(tmp_path: Path) -> None:
    """Train and validation are disjoint and together are exactly the train file."""
    data_dir, rows = _split_data(tmp_path)
    dm = _datamodule(data_dir, val_fraction=0.2, test_file=None)
    train, val = _texts_labels(dm, "train"), _texts_labels(dm, "validation")
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted((r["text"], r["label"]) for r in rows)
    assert len(val) == 10 + 4 + 2 + 1


def test_split_is_seeded(tmp_path: Path) -> None:
    """Same seed, same split (across instances); another seed, another split."""
    data_dir, _ = _split_data(tmp_path)

    def val_texts(seed: int) -> set[str]:
        return {text for text, _ in _texts_labels(_datamodule(data_dir, seed=seed, test_file=None), "validation")}

    assert val_texts(7) == val_texts(7)
    assert val_texts(7) != val_texts(8)


def test_validation_file_disables_split(tmp_path: Path) -> None:
    data_dir, rows = _split_data(tmp_path)
    write_jsonl(data_dir / "validation.jsonl", [{"text": "val a", "label": "a"}])
    dm = _datamodule(data_dir, test_file=None)
    assert len(dm.split_records("train")) == len(rows)
    assert _texts_labels(dm, "validation") == [("val a", "a")]


# ---- tokenization, padding and sampling ----


@pytest.fixture()
def varied_dir(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "train.jsonl", _varied_rows(200, seed=1))
    write_jsonl(tmp_path / "validation.jsonl", _varied_rows(37, seed=2))
    write_jsonl(tmp_path / "test.jsonl", _varied_rows(29, seed=3))
    return tmp_path


def test_dynamic_padding_and_attention_mask(varied_dir: Path, tiny_model: Path) -> None:
    """Every batch is padded to its own longest row; the mask marks exactly the real tokens."""
    dm = _datamodule(varied_dir, tiny_model, max_length=128, batch_size=8, length_grouping=False)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    pad_id = dm.tokenizer.pad_token_id
    widths = set()
    for batch in dm.train_dataloader():
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert ids.shape == mask.shape and ids.dtype == mask.dtype == torch.long
        lengths = [len(dataset.input_ids[i]) for i in batch["index"].tolist()]
        assert ids.shape[1] == max(lengths)
        assert mask.sum(dim=1).tolist() == lengths
        for row, n in enumerate(lengths):
            assert ids[row, :n].tolist() == dataset.input_ids[int(batch["index"][row])]
            assert (ids[row, n:] == pad_id).all()
            assert (mask[row, n:] == 0).all()
        assert batch["labels"].tolist() == [dataset.labels[i] for i in batch["index"].tolist()]
        widths.add(ids.shape[1])
    assert len(widths) > 1  # not padded to a fixed width


def test_tokens_match_the_text(varied_dir: Path, word_tokenizer: Path) -> None:
    """Encoded rows are [CLS] + one token per word + [SEP] for in-vocabulary words (the texts were not mixed up)."""
    dm = _datamodule(varied_dir, word_tokenizer, max_length=128)
    dm.setup("fit")
    tokenizer = dm.tokenizer
    for record, ids in zip(dm.split_records("train"), dm.datasets["train"].input_ids, strict=True):
        assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", *record.text.split(), "[SEP]"]


def test_max_length_truncates(varied_dir: Path, tiny_model: Path) -> None:
    dm = _datamodule(varied_dir, tiny_model, max_length=16, batch_size=8)
    dm.setup("fit")
    lengths = dm.datasets["train"].lengths
    assert max(lengths) == 16
    assert min(lengths) < 16
    sep = dm.tokenizer.sep_token_id
    assert all(ids[-1] == sep for ids in dm.datasets["train"].input_ids)
    for batch in dm.train_dataloader():
        assert batch["input_ids"].shape[1] <= 16
    for batch in dm.val_dataloader():
        assert batch["input_ids"].shape[1] <= 16


def _mean_padding(loader: DataLoader) -> float:
    pads = [int((1 - batch["attention_mask"]).sum()) for batch in loader]
    return sum(pads) / len(pads)


def test_length_grouping_reduces_padding(varied_dir: Path, tiny_model: Path) -> None:
    """On texts of 1..60 words, length-grouped batches waste a small fraction of the padding of random ones."""
    grouped = _datamodule(varied_dir, tiny_model, batch_size=8, length_grouping=True)
    plain = _datamodule(varied_dir, tiny_model, batch_size=8, length_grouping=False)
    grouped.setup("fit")
    plain.setup("fit")
    assert isinstance(grouped.train_dataloader().sampler, LengthGroupedSampler)
    assert not isinstance(plain.train_dataloader().sampler, LengthGroupedSampler)
    grouped_pad, plain_pad = _mean_padding(grouped.train_dataloader()), _mean_padding(plain.train_dataloader())
    assert plain_pad > 50
    assert grouped_pad < 0.2 * plain_pad, (grouped_pad, plain_pad)


def test_length_grouping_with_small_mega_batches_still_helps(varied_dir: Path, tiny_model: Path) -> None:
    dm = _datamodule(varied_dir, tiny_model, batch_size=8, mega_batch_factor=4)
    plain = _datamodule(varied_dir, tiny_model, batch_size=8, length_grouping=False)
    dm.setup("fit")
    plain.setup("fit")
    assert _mean_padding(dm.train_dataloader()) < 0.6 * _mean_padding(plain.train_dataloader())


@pytest.mark.parametrize("length_grouping", [True, False])
def test_every_training_index_once_per_epoch(varied_dir: Path, tiny_model: Path, length_grouping: bool) -> None:
    dm = _datamodule(varied_dir, tiny_model, batch_size=8, length_grouping=length_grouping)
    dm.setup("fit")
    loader = dm.train_dataloader()
    n = len(dm.datasets["train"])
    for epoch in range(3):
        if length_grouping:
            loader.sampler.set_epoch(epoch)
        indices = _loader_indices(loader)
        assert sorted(indices) == list(range(n))
        assert indices != list(range(n))  # shuffled


def test_length_grouped_batches_are_full_except_last(varied_dir: Path, tiny_model: Path) -> None:
    """200 rows, batch 8, mega-batches of 24: batch boundaries stay aligned (only the final batch may be short)."""
    write_jsonl(varied_dir / "train.jsonl", _varied_rows(203, seed=4))
    dm = _datamodule(varied_dir, tiny_model, batch_size=8, mega_batch_factor=3)
    dm.setup("fit")
    sizes = [len(batch["index"]) for batch in dm.train_dataloader()]
    assert sizes[:-1] == [8] * (len(sizes) - 1)
    assert sum(sizes) == 203


def test_epoch_order_changes_and_is_reproducible(varied_dir: Path, tiny_model: Path) -> None:
    """set_epoch changes the order; the same seed and epoch reproduce it exactly (also in a new DataModule)."""

    def order(seed: int, epoch: int) -> list[int]:
        dm = _datamodule(varied_dir, tiny_model, batch_size=8, seed=seed)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return _loader_indices(loader)

    epoch0, epoch1 = order(42, 0), order(42, 1)
    assert epoch0 != epoch1
    assert order(42, 1) == epoch1
    assert order(42, 0) == epoch0
    assert order(43, 0) != epoch0


def test_sampler_epochs_from_set_epoch_or_from_reiteration(varied_dir: Path, tiny_model: Path) -> None:
    """set_epoch(e) gives epoch e's order; iterating again without set_epoch (DDP: Lightning only sets the epoch
    on its wrapper) moves on to epoch e + 1."""
    from datamodules.sampler import LengthGroupedSampler

    dm = _datamodule(varied_dir, tiny_model, batch_size=8)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(2)
    first, second = _loader_indices(loader), _loader_indices(loader)
    lengths = dm.datasets["train"].lengths
    fresh2, fresh3 = LengthGroupedSampler(lengths, 8, seed=dm.seed), LengthGroupedSampler(lengths, 8, seed=dm.seed)
    fresh2.set_epoch(2)
    fresh3.set_epoch(3)
    assert first == list(fresh2) and second == list(fresh3) and first != second


def test_sampler_keeps_length_groups_per_rank_under_ddp(monkeypatch: pytest.MonkeyPatch) -> None:
    """With world size 2, rank r takes every 2nd index (Lightning's wrapper): its batches still hold similar lengths."""
    import random

    import datamodules.sampler as sampler_module

    monkeypatch.setattr(sampler_module, "_world_size", lambda: 2)
    lengths = [random.Random(i).randint(1, 200) for i in range(800)]
    order = list(sampler_module.LengthGroupedSampler(lengths, batch_size=8, mega_batch_factor=50, seed=0))
    assert sorted(order) == list(range(800))
    for rank in range(2):
        shard = order[rank::2]
        spreads = [max(lengths[i] for i in shard[b:b + 8]) - min(lengths[i] for i in shard[b:b + 8])
                   for b in range(0, len(shard), 8)]
        assert sum(spreads) / len(spreads) < 10  # random batches of 8 from 1..200 spread ~150


@pytest.mark.parametrize("split", ["validation", "test"])
def test_eval_loaders_cover_every_example_once(varied_dir: Path, tiny_model: Path, split: str) -> None:
    dm = _datamodule(varied_dir, tiny_model, batch_size=4)
    stage = "fit" if split == "validation" else "test"
    dm.setup(stage)
    loader = dm.val_dataloader() if split == "validation" else dm.test_dataloader()
    n = len(dm.split_records(split))
    assert n in (37, 29)
    indices = _loader_indices(loader)
    assert sorted(indices) == list(range(n))
    assert loader.batch_size == 8  # eval_batch_size defaults to 2 * batch_size
    # Sorted longest first: widths never increase, and labels follow their rows.
    widths = [batch["input_ids"].shape[1] for batch in loader]
    assert widths == sorted(widths, reverse=True)
    labels = {label: i for i, label in enumerate(dm.label_names)}
    records = dm.split_records(split)
    for batch in loader:
        assert batch["labels"].tolist() == [labels[records[i].label] for i in batch["index"].tolist()]


def test_eval_loaders_cover_split_validation(tmp_path: Path, tiny_model: Path) -> None:
    """With the split from train, the validation loader holds exactly the held-out rows."""
    data_dir, _ = _split_data(tmp_path)
    dm = _datamodule(data_dir, tiny_model, val_fraction=0.2, batch_size=4, test_file=None)
    dm.setup("fit")
    assert sorted(_loader_indices(dm.val_dataloader())) == list(range(17))
    assert sorted(_loader_indices(dm.train_dataloader())) == list(range(83 - 17))


def test_predict_file_with_or_without_labels(tmp_path: Path, tiny_model: Path) -> None:
    """An unlabelled prediction file is read as text only; a labelled one keeps its (known) labels."""
    write_jsonl(tmp_path / "train.jsonl", make_rows(16, seed=0))
    write_jsonl(tmp_path / "pool.jsonl", [{"text": r["text"]} for r in make_rows(6, seed=1)])
    write_jsonl(tmp_path / "labelled.jsonl", make_rows(6, seed=2))
    unlabelled = _datamodule(tmp_path, tiny_model, predict_file="pool")
    unlabelled.setup("predict")
    assert [r.label for r in unlabelled.split_records("predict")] == [None] * 6
    assert unlabelled.datasets["predict"].labels is None
    labelled = _datamodule(tmp_path, tiny_model, predict_file="labelled")
    labelled.setup("predict")
    assert labelled.datasets["predict"].labels == [labelled.label_to_id[r["label"]] for r in make_rows(6, seed=2)]
