"""Prompt DataModule for generative (decoder LM) classifiers: one prompt, one answer with one or more fields, as a
JSON object (``answer_format: json``) or a function call (``answer_format: call``).

Each example becomes ``prompt ids + answer ids``; the LM loss is taken on the answer ids only (``labels`` is -100
on the prompt and on padding). The prompt lists the allowed values of every field; with a tokenizer that has a
chat template the instruction is the user turn (``apply_chat_template(..., add_generation_prompt=True)``),
otherwise a plain instruction template is used.

The answer format (its pieces, their tokenization and the parser) is :mod:`fenlei.answers`, shared with the
generative classifier. Multi-field decoding scores field ``k`` after the prompt, the openers and the values chosen
for fields ``0..k-1`` (the answer is conditioned on them, exactly as in training).

Label remapping (``label_maps``, e.g. five priority levels to three) is applied when the files are read; label
sets are the sorted (mapped) training values unless given in ``labels``. The label columns are checked as in
:class:`~datamodules.text_classification.TextClassificationDataModule` (``datamodules.labels``): mixed kinds
refused unless ``label_type`` is set, at least two training classes per field, no validation value the model
cannot learn; and long texts are cut by characters on reading (``datamodules.text_limits``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Union

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.labels import (
    LABEL_TYPES,
    LabelType,
    ambiguous_labels,
    as_label,
    label_kind,
    one_class,
    unlearnable_label,
)
from datamodules.readers import DataError, check_encodable, read_rows, require_tokenizer, resolve_data_file
from datamodules.sampler import EpochRandomSampler, FixedOrderSampler, LengthGroupedSampler, sorted_by_length
from datamodules.splits import label_sort_key, stratified_split
from datamodules.text_limits import char_limit, cut_reason, cut_texts, warn_cuts
from fenlei.answers import AnswerFormat, AnswerFormatError, AnswerSpec, build_answer_spec

DEFAULT_INSTRUCTION = (
    "Classify the text. Answer with a JSON object with the fields {field_list}, each one of the allowed values.\n"
    "{allowed}\nText: {text}"
)
# Used instead of DEFAULT_INSTRUCTION when answer_format is "call" and no instruction is given.
DEFAULT_CALL_INSTRUCTION = (
    "Classify the text. Answer with one function call {function}(...) with the arguments {field_list}, each one of "
    "the allowed values.\n{allowed}\nText: {text}"
)
PLAIN_SUFFIX = "\nAnswer:"


@dataclass(frozen=True)
class PromptRecord:
    """One example: the joined (cut) text, the mapped value of every label field (None: unlabelled), its line, and
    per field the value as read before ``label_maps`` with the JSON kind of the raw value (for the label checks)."""

    text: str
    values: Optional[list[str]]
    line: int
    read: Optional[list[tuple[str, str]]] = None  # (kind, value before label_maps) per label field


class PromptDataset(Dataset):
    def __init__(self, prompts: list[list[int]], choices: Optional[list[list[int]]], spec: AnswerSpec) -> None:
        self.prompts, self.choices, self.spec = prompts, choices, spec

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"prompt": self.prompts[index], "index": index}
        if self.choices is not None:
            choice = self.choices[index]
            item["targets"] = choice
            # A value unseen in train (-1, evaluation splits only) has no answer ids: the row is kept for the
            # metrics (scored as wrong) but contributes nothing to the loss.
            item["answer"] = self.spec.answer_ids([max(c, 0) for c in choice])
            item["answer_in_loss"] = min(choice) >= 0
        return item

    @property
    def lengths(self) -> list[int]:
        return [len(p) for p in self.prompts]


class PromptCollator:
    """Batches with ``input_ids/attention_mask/labels`` (prompt + answer, right-padded, labels -100 on prompt and
    pad) for the LM loss, ``prompt_ids/prompt_mask`` (prompt only, left-padded) for decoding, ``targets``
    ``[B, num_fields]`` (-1 where unknown) and ``index``."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = len(items)
        width = max(len(it["prompt"]) for it in items)
        prompt_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((n, width), dtype=torch.long)
        for r, it in enumerate(items):
            p = it["prompt"]
            prompt_ids[r, width - len(p) :] = torch.tensor(p)
            prompt_mask[r, width - len(p) :] = 1
        batch = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
                 "index": torch.tensor([it["index"] for it in items])}
        if "answer" in items[0]:
            full = [it["prompt"] + it["answer"] for it in items]
            w = max(map(len, full))
            ids = torch.full((n, w), self.pad_id, dtype=torch.long)
            mask = torch.zeros((n, w), dtype=torch.long)
            labels = torch.full((n, w), -100, dtype=torch.long)
            for r, (it, seq) in enumerate(zip(items, full, strict=True)):
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
                if it["answer_in_loss"]:
                    labels[r, len(it["prompt"]) : len(seq)] = torch.tensor(it["answer"])  # answer tokens only
            batch.update(input_ids=ids, attention_mask=mask, labels=labels,
                         targets=torch.tensor([it["targets"] for it in items], dtype=torch.long))
        return batch


class PromptClassificationDataModule(pl.LightningDataModule):
    """Labelled text as instruction/chat prompts with a JSON answer (one or several label fields).

    Args:
        tokenizer: Tokenizer of the decoder LM (hub id, folder, ``.gguf`` or ``packaged:gemma3-270m``). Optional in a
            config: fenlei's CLI fills it with ``model.init_args.pretrained`` when it is not set.
        data_dir: Folder holding ``train``, optional ``validation`` and ``test`` files.
        train_file: Train file name or path.
        val_file: Validation file; when the default ``validation`` is absent, a stratified split of train.
        test_file: Test file (the default may be absent).
        predict_file: File for ``predict`` (default: the test file).
        text_fields: Field(s) holding the text, joined with ``text_separator``.
        text_separator: String between joined text fields.
        label_fields: Label field(s), first = primary (``val/f1_macro`` and the linked ``num_classes`` /
            ``label_names`` refer to it). Several fields are predicted together as one JSON object.
        field_names: Name of each field in the prompt and JSON (default: the field name; e.g. ``{label: category}``).
        labels: Fixed label set per field (order = class ids); default: the sorted mapped training values.
        label_maps: ``{field: {old: new}}`` remapping raw values (e.g. priority 0,1 -> high; 2 -> medium ...).
            Values not in a field's map are kept.
        label_type: How to read the label values, as in ``TextClassificationDataModule``: one for every field, or
            per field (``{urgency: int}``; fields left out are read as null). null (default): as written, and a
            field that mixes kinds (JSON integers and strings, floats, booleans) or spells one number two ways
            (``"1"`` and ``"01"``) is refused with the file and line. ``str``: every spelling is its own value.
            ``int``: every value is read as an integer (before ``label_maps``).
        answer_format: ``json`` (``{"category": "...", ...}``) or ``call`` (``classify(category="...", ...)``, a
            function call as FunctionGemma-style models are tuned to emit; field names must be identifiers).
        function_name: The called function's name for ``answer_format: call``.
        instruction: Prompt template with ``{field_list}``, ``{allowed}`` (one line per field), ``{text}`` and
            ``{function}``; the default asks for a JSON object, or for the function call with ``call``.
        use_chat_template: ``auto`` (the tokenizer's chat template when it has one), ``always`` or ``never``.
        max_length: Maximum number of TEXT tokens (the text is cut, never the instruction or the answer).
        max_chars: Cut longer texts to this many characters before tokenizing (default ``max_length * 32``, as
            ``TextClassificationDataModule`` cuts); one warning per file names the first cut line.
        val_fraction: Fraction of each class moved to validation when there is no validation file.
        batch_size: Training batch size.
        eval_batch_size: Batch size for validation/test/predict (default ``batch_size``).
        length_grouping: Group training batches by prompt length (``datamodules.sampler.LengthGroupedSampler``:
            mega-batches sorted by length, batches shuffled, seeded), so less padding is computed; default off, the
            plain random order. Evaluation batches are always sorted by length.
        mega_batch_factor: Number of batches sorted together when grouping by length.
        num_workers: DataLoader workers.
        seed: Seed for the validation split and the batch order.
    """

    def __init__(
        self,
        tokenizer: Optional[str] = None,
        data_dir: Optional[str] = None,
        train_file: str = "train",
        val_file: Optional[str] = "validation",
        test_file: Optional[str] = "test",
        predict_file: Optional[str] = None,
        text_fields: list[str] = ["text"],  # noqa: B006 - jsonargparse shows literal defaults in --help
        text_separator: str = " ",
        label_fields: list[str] = ["label"],  # noqa: B006
        field_names: Optional[dict[str, str]] = None,
        labels: Optional[dict[str, list[str]]] = None,
        label_maps: Optional[dict[str, dict[str, str]]] = None,
        label_type: Union[LabelType, dict[str, LabelType], None] = None,
        answer_format: AnswerFormat = "json",
        function_name: str = "classify",
        instruction: str = DEFAULT_INSTRUCTION,
        use_chat_template: str = "auto",
        max_length: int = 128,
        max_chars: Optional[int] = None,
        val_fraction: float = 0.1,
        batch_size: int = 8,
        eval_batch_size: Optional[int] = None,
        length_grouping: bool = False,
        mega_batch_factor: int = 50,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if not label_fields:
            raise ValueError("label_fields must name at least one field")
        if use_chat_template not in ("auto", "always", "never"):
            raise ValueError("use_chat_template must be auto, always or never")
        self.save_hyperparameters()
        self.tokenizer_name = require_tokenizer(tokenizer)
        self.data_dir = data_dir
        self.text_fields, self.text_separator = list(text_fields), text_separator
        self.label_fields = list(label_fields)
        self.field_names = [(field_names or {}).get(f, f) for f in self.label_fields]
        self.fixed_labels = labels or {}
        self.label_types = self._label_types(label_type)
        try:  # keys are values as read, so they are read as label_type too ("01" -> "1" under int)
            self.label_maps = {f: {as_label(k, self.label_types.get(f)): str(v) for k, v in m.items()}
                               for f, m in (label_maps or {}).items()}
        except ValueError as err:
            raise DataError(f"label_maps: {err}") from None
        unknown = set(self.label_maps) - set(self.label_fields)
        if unknown:
            raise DataError(f"label_maps: field(s) {sorted(unknown)} are not in label_fields {self.label_fields}")
        if answer_format == "call" and instruction == DEFAULT_INSTRUCTION:
            instruction = DEFAULT_CALL_INSTRUCTION
        self.answer_format, self.function_name = answer_format, function_name
        self.instruction, self.use_chat_template = instruction, use_chat_template
        self.max_length, self.val_fraction, self.seed = max_length, val_fraction, seed
        try:
            self.max_chars = char_limit(max_length, max_chars)
        except ValueError as err:
            raise DataError(f"max_chars: {err}") from None
        self._max_chars_given = max_chars is not None
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.length_grouping, self.mega_batch_factor = length_grouping, mega_batch_factor
        self.num_workers = num_workers
        self.train_path = self._find(train_file, "train_file", required=True)
        self.val_path = self._find(val_file, "val_file", required=val_file not in (None, "validation"))
        self.test_path = self._find(test_file, "test_file", required=test_file not in (None, "test"))
        self.predict_path = self._find(predict_file, "predict_file", required=True) if predict_file else self.test_path
        self.datasets: dict[str, PromptDataset] = {}

    def _label_types(self, label_type: Union[str, dict[str, str], None]) -> dict[str, Optional[str]]:
        """``label_type`` per label field."""
        chosen = dict(label_type) if isinstance(label_type, dict) else dict.fromkeys(self.label_fields, label_type)
        unknown = set(chosen) - set(self.label_fields)
        if unknown:
            raise DataError(f"label_type: field(s) {sorted(unknown)} are not in label_fields {self.label_fields}")
        for value in chosen.values():
            if value not in (None, *LABEL_TYPES):
                raise DataError(f"label_type: must be one of {', '.join(LABEL_TYPES)} or null, got {value!r}")
        return {f: chosen.get(f) for f in self.label_fields}

    def _find(self, name: Optional[str], field: str, required: bool) -> Optional[Path]:
        if not name:
            return None
        path = resolve_data_file(name, self.data_dir)
        if path is None and required:
            where = f" in data_dir {self.data_dir!r}" if self.data_dir else ""
            raise DataError(f"{field}: no file {name!r}{where} (tried suffixes .jsonl, .json, .csv, .tsv)")
        return path

    # ---- reading (lazy: at link_arguments time) ----

    def _read(self, path: Path, labelled: bool = True) -> list[PromptRecord]:
        out = []
        for line, row in read_rows(path):
            parts = []
            for f in self.text_fields:
                if f not in row or row[f] is None:
                    raise DataError(f"{path}:{line}: missing field {f!r}")
                parts.append(str(row[f]).strip())
                check_encodable(parts[-1], f"{path}:{line}: field {f!r}")  # before the run directory is touched
            text = self.text_separator.join(p for p in parts if p)
            if not text:
                raise DataError(f"{path}:{line}: empty text in field(s) {', '.join(map(repr, self.text_fields))}")
            values: Optional[list[str]] = None
            read: Optional[list[tuple[str, str]]] = None
            if labelled or all(f in row for f in self.label_fields):
                values, read = [], []
                for f in self.label_fields:
                    if f not in row or row[f] is None or str(row[f]).strip() == "":
                        raise DataError(f"{path}:{line}: missing or empty label field {f!r}")
                    try:
                        value = as_label(row[f], self.label_types[f])
                    except ValueError as err:
                        raise DataError(f"{path}:{line}: field {f!r}: {err}") from None
                    check_encodable(value, f"{path}:{line}: field {f!r}")
                    read.append((label_kind(row[f]), value))
                    values.append(self.label_maps.get(f, {}).get(value, value))
            out.append(PromptRecord(text, values, line, read))
        return self._cut_long_texts(out, path)

    def _cut_long_texts(self, records: list[PromptRecord], path: Path) -> list[PromptRecord]:
        """Texts over ``max_chars`` cut (the tokenizer would read a 100 MB line whole to keep ``max_length`` tokens),
        and one warning naming the first cut line of the file."""
        texts, cuts = cut_texts([r.text for r in records], [r.line for r in records], self.max_chars)
        if cuts is None:
            return records
        warn_cuts(cuts, str(path), cut_reason(self.max_length, self._max_chars_given))
        return [PromptRecord(t, r.values, r.line, r.read) for r, t in zip(records, texts, strict=True)]

    @cached_property
    def _train_file_records(self) -> list[PromptRecord]:
        return self._read(self.train_path)

    @cached_property
    def _splits(self) -> dict[str, list[PromptRecord]]:
        train = self._train_file_records
        splits = {"train": train}
        if self.val_path is not None:
            splits["validation"] = self._read(self.val_path)
        else:
            tr, va = stratified_split([r.values[0] for r in train], self.val_fraction, self.seed)  # type: ignore[index]
            splits["train"], splits["validation"] = [train[i] for i in tr], [train[i] for i in va]
        if self.test_path is not None:
            splits["test"] = self._read(self.test_path)
        self._check_labels(splits)
        return splits

    def _split_path(self, split: str) -> Optional[Path]:
        return {"train": self.train_path, "validation": self.val_path or self.train_path, "test": self.test_path}[split]

    def _check_labels(self, splits: dict[str, list[PromptRecord]]) -> None:
        """The checks of ``TextClassificationDataModule``, per label field; a DataError naming the first offending
        line, before any Trainer, logger or run directory exists. Mixed kinds are looked for in every split; test
        values unseen in train stay allowed (scored as wrong, see ``PromptDataset``), but validation selects the
        checkpoint, so a value there that the model cannot learn is an error, as is a field with one class."""
        for k, f in enumerate(self.label_fields):
            if self.label_types[f] is None:
                problem = ambiguous_labels(((r.read or [])[k] + (f"{self._split_path(name)}:{r.line}",)
                                            for name, records in splits.items() for r in records), field=f)
                if problem:
                    raise DataError(problem)
            trained = {r.values[k] for r in splits["train"]}  # type: ignore[index]
            fixed = f in self.fixed_labels
            source = "the label list" if fixed else f"the training data ({len(self.field_labels[k])} labels)"
            learned = [(r.values[k], f"{self._split_path(name)}:{r.line}")  # type: ignore[index]
                       for name in ("train", "validation") for r in splits[name]]
            problem = one_class(trained, str(self.train_path), field=f) or unlearnable_label(
                learned, set(self.field_labels[k]), trained, source, field=f)
            if problem:
                raise DataError(problem)

    def split_texts(self) -> dict[str, Any]:
        """The prompt texts of every split (fields joined), for the leakage warning at the start of ``fit``
        (``fenlei.data.leakage.warn_split_leakage``)."""
        # Plain dicts (the fields of fenlei.data.leakage.SplitTexts): datamodules stand below fenlei.data.
        return {name: {"texts": [r.text for r in records], "path": self._split_path(name),
                       "from_train": name == "validation" and self.val_path is None}
                for name, records in self._splits.items()}

    @cached_property
    def field_labels(self) -> list[list[str]]:
        """Allowed values per field (class-id order)."""
        train = self._train_file_records
        out = []
        for k, f in enumerate(self.label_fields):
            fixed = self.fixed_labels.get(f)
            if fixed is not None:
                try:
                    names = [as_label(v, self.label_types[f]) for v in fixed]
                except ValueError as err:
                    raise DataError(f"labels: field {f!r}: {err}") from None
                if len(set(names)) != len(names):  # after reading them as label_type: "01" and "1" are one int
                    raise DataError(f"labels: the fixed label list of field {f!r} has duplicates")
                out.append(names)
            else:
                out.append(sorted({r.values[k] for r in train}, key=label_sort_key))  # type: ignore[index]
        return out

    @property
    def label_names(self) -> list[str]:
        return self.field_labels[0]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def class_counts(self) -> list[int]:
        counts = Counter(r.values[0] for r in self._splits["train"])  # type: ignore[index]
        return [counts.get(label, 0) for label in self.label_names]

    @property
    def vocab_size(self) -> Optional[int]:
        return None  # prompts add no tokens

    @cached_property
    def tokenizer(self) -> Any:
        from fenlei.pretrained.causal_lm import load_tokenizer

        return load_tokenizer(self.tokenizer_name, padding_side="left")

    @cached_property
    def answer_spec(self) -> AnswerSpec:
        try:
            return build_answer_spec(self.tokenizer, self.label_fields, self.field_names, self.field_labels,
                                     self.answer_format, self.function_name)
        except AnswerFormatError as err:  # the format comes from this DataModule's options
            raise DataError(str(err)) from None

    # ---- prompts ----

    def _chat(self) -> bool:
        has = bool(getattr(self.tokenizer, "chat_template", None))
        if self.use_chat_template == "always" and not has:
            raise DataError(f"use_chat_template=always but tokenizer {self.tokenizer_name!r} has no chat template")
        return has and self.use_chat_template != "never"

    def prompt_text(self, text: str) -> str:
        """The full prompt string for one text (before the answer)."""
        allowed = "\n".join(f"{n}: {', '.join(v)}" for n, v in zip(self.field_names, self.field_labels, strict=True))
        body = self.instruction.format(field_list=", ".join(self.field_names), allowed=allowed, text=text,
                                       function=self.function_name)
        if self._chat():
            return self.tokenizer.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                                      add_generation_prompt=True)
        return body + PLAIN_SUFFIX

    def encode_prompt(self, text: str) -> list[int]:
        text = text[: self.max_chars]  # texts of the data files are cut (and warned of) on reading; others here
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_length:  # cut the text, never the instruction or the answer
            text = self.tokenizer.decode(ids[: self.max_length])
        prompt = self.prompt_text(text)
        if self._chat():  # the chat template writes its own BOS
            return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return bos + list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def _encode(self, rows: list[PromptRecord], split: str) -> PromptDataset:
        prompts = [self.encode_prompt(r.text) for r in rows]
        index = [{v: i for i, v in enumerate(values)} for values in self.field_labels]
        choices: Optional[list[list[int]]] = None
        if all(r.values is not None for r in rows):
            choices = []
            for row in rows:
                row_choice = []
                for k, v in enumerate(row.values or []):
                    if v not in index[k]:
                        if split == "train":  # _check_labels refuses this first; kept for rows given otherwise
                            raise DataError(f"{self.train_path}:{row.line}: label {v!r} of field "
                                            f"{self.label_fields[k]!r} does not occur in {self.field_labels[k]}")
                        row_choice.append(-1)  # unseen in train: scored as wrong, never trained on
                    else:
                        row_choice.append(index[k][v])
                choices.append(row_choice)
        return PromptDataset(prompts, choices, self.answer_spec)

    def prepare_data(self) -> None:
        self._splits  # noqa: B018 - read and validate every file first

    def setup(self, stage: Optional[str] = None) -> None:
        wanted = {"fit": ["train", "validation"], "validate": ["validation"], "test": ["test"], "predict": ["predict"]}
        for split in wanted.get(stage or "fit", ["train", "validation"]):
            if split in self.datasets:
                continue
            if split == "predict":
                if self.predict_path is None:
                    raise DataError("predict_file: no file to predict on")
                rows = self._read(self.predict_path, labelled=False)
            else:
                if split not in self._splits:
                    raise DataError(f"test_file: no {split} file found (set data.init_args.test_file)")
                rows = self._splits[split]
            self.datasets[split] = self._encode(rows, split)

    def run_files(self) -> dict[str, str]:
        """The files this DataModule adds to a run directory, by kind (see TextClassificationDataModule)."""
        return {"labels": json.dumps(self.label_names, ensure_ascii=False, indent=1) + "\n"}

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        if train and self.length_grouping:
            sampler: Any = LengthGroupedSampler(dataset.lengths, self.batch_size, self.mega_batch_factor, self.seed)
        elif train:
            sampler = EpochRandomSampler(len(dataset), self.seed)
        else:
            sampler = FixedOrderSampler(sorted_by_length(dataset.lengths))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return DataLoader(dataset, batch_size=self.batch_size if train else self.eval_batch_size, sampler=sampler,
                          collate_fn=PromptCollator(pad), num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", False)
