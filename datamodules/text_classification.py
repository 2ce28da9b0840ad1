"""Text-classification DataModule: JSONL/CSV files to length-bucketed, dynamically padded batches.

Everything that the model and the loss need from the data (``num_classes``, ``label_names``, ``class_counts``)
is known right after ``__init__``: the files are read and validated lazily on first access to these properties,
which is when LightningCLI applies ``link_arguments(..., apply_on="instantiate")``. So every input error is raised
before a Trainer, a logger or a run directory exists.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.labels import LABEL_TYPES, LabelType, ambiguous_labels, as_label, one_class, unlearnable_label
from datamodules.markers import FeatureMarkers
from datamodules.readers import DataError, Record, read_records, require_tokenizer, resolve_data_file
from datamodules.sampler import EpochRandomSampler, FixedOrderSampler, LengthGroupedSampler, sorted_by_length
from datamodules.splits import label_sort_key, stratified_split
from datamodules.text_limits import char_limit, cut_reason, cut_texts, warn_cuts
from fenlei.pretrained import from_pretrained


class EncodedDataset(Dataset):
    """Token ids (unpadded) and label ids; ``index`` maps a prediction back to its input row."""

    def __init__(
        self, input_ids: list[list[int]], labels: Optional[list[int]], targets: Optional[list[float]] = None
    ) -> None:
        self.input_ids = input_ids
        self.labels = labels
        self.targets = targets  # numeric targets (NumericTargetDataModule), next to their bin ids in ``labels``

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"input_ids": self.input_ids[index], "index": index}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        if self.targets is not None:
            item["targets"] = self.targets[index]
        return item

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


class PadCollator:
    """Pad a list of items to the longest in the batch (dynamic padding); no ``token_type_ids`` (MPNet/RoBERTa
    take none and BERT defaults them to zeros)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            ids = item["input_ids"]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        }
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([item["labels"] for item in items], dtype=torch.long)
        if "targets" in items[0]:
            batch["targets"] = torch.tensor([item["targets"] for item in items], dtype=torch.float32)
        return batch


class TextClassificationDataModule(pl.LightningDataModule):
    """Labelled text from JSONL or CSV files.

    Args:
        tokenizer: HF tokenizer name or path, or a fenlei alias such as ``packaged:minilm``. Optional in a config:
            fenlei's CLI fills it with ``model.init_args.pretrained`` when it is not set.
        data_dir: Folder holding ``train``, optional ``validation`` and ``test`` files (``.jsonl``, ``.json``,
            ``.csv`` or ``.tsv``), the layout of ``../shared/data``. Optional when the files are given as paths.
        train_file: Train file name (stem or file name inside ``data_dir``) or path.
        val_file: Validation file. When the default ``validation`` does not exist (or ``val_file`` is null), a
            stratified, seeded split of train is used; any other name must exist.
        test_file: Test file. The default ``test`` may be absent (``test`` then fails with a clear message); any
            other name must exist.
        predict_file: Unlabelled (or labelled) file for ``predict``; defaults to the test file.
        text_fields: Field(s) holding the text; several are joined with ``text_separator``.
        text_separator: String placed between joined text fields.
        label_field: Field holding the class label (any string or integer).
        labels: Fixed label vocabulary (order = class ids). Default: the sorted labels of the train file.
        label_type: How to read labels. null (default): as written, and a label column that mixes kinds (JSON
            integers and strings, floats, booleans: ``1`` and ``"1"``) or spells one number two ways (``"1"`` and
            ``"01"``) is refused with the file and line. ``str``: every spelling is its own class (whitespace
            stripped). ``int``: every label is read as an integer (``"01"``, ``" 1"``, ``1.0`` are class ``1``).
        val_fraction: Fraction of every class moved from train to validation when there is no validation file.
        max_length: Truncate token sequences to this many tokens (special tokens included).
        max_chars: Cut longer texts to this many characters before tokenizing (a 100 MB line would otherwise be
            tokenized whole); default ``max_length * 32`` (as ``infer`` and ``serve`` cut). One warning per file names the first cut line and the
            number of texts cut.
        batch_size: Training batch size (evaluation uses ``eval_batch_size``).
        eval_batch_size: Batch size for validation, test and prediction; defaults to ``2 * batch_size``.
        length_grouping: Group training batches by length (see ``LengthGroupedSampler``); evaluation batches are
            always sorted by length.
        mega_batch_factor: Number of batches sorted together when grouping by length.
        num_workers: DataLoader workers (0 is fastest here: texts are tokenized once in ``setup``).
        seed: Seed for the validation split and the batch order.
        markers: Feature markers (``datamodules.markers.FeatureMarkers`` arguments; ``{}`` for the defaults):
            prefix marker tokens such as ``[CALCULATE] [HOW]`` to every text by keyword rules. The markers are
            added to the tokenizer as special tokens and the model's embeddings are resized (``vocab_size`` is
            linked to the model).
    """

    def __init__(
        self,
        tokenizer: Optional[str] = None,
        data_dir: Optional[str] = None,
        train_file: str = "train",
        val_file: Optional[str] = "validation",
        test_file: Optional[str] = "test",
        predict_file: Optional[str] = None,
        text_fields: list[str] = ["text"],  # noqa: B006 - jsonargparse needs a literal default to show it in --help
        text_separator: str = " ",
        label_field: str = "label",
        labels: Optional[list[str]] = None,
        label_type: Optional[LabelType] = None,
        val_fraction: float = 0.1,
        max_length: int = 128,
        max_chars: Optional[int] = None,
        batch_size: int = 32,
        eval_batch_size: Optional[int] = None,
        length_grouping: bool = True,
        mega_batch_factor: int = 50,
        num_workers: int = 0,
        seed: int = 42,
        markers: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        if not text_fields:
            raise ValueError("text_fields must name at least one field")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.tokenizer_name = require_tokenizer(tokenizer)
        self.data_dir = data_dir
        self.text_fields = list(text_fields)
        self.text_separator = text_separator
        self.label_field = label_field
        if label_type not in (None, *LABEL_TYPES):
            raise DataError(f"label_type: must be one of {', '.join(LABEL_TYPES)} or null, got {label_type!r}")
        self.label_type = label_type
        self.fixed_labels = labels
        self.val_fraction = val_fraction
        self.max_length = max_length
        try:
            self.max_chars = char_limit(max_length, max_chars)
        except ValueError as err:
            raise DataError(f"max_chars: {err}") from None
        self._max_chars_given = max_chars is not None
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.length_grouping = length_grouping
        self.mega_batch_factor = mega_batch_factor
        self.num_workers = num_workers
        self.seed = seed
        try:
            self.markers = FeatureMarkers.from_config(markers)
        except (TypeError, ValueError) as err:
            raise DataError(f"markers: {err}") from None
        self.train_path = self._require(train_file, "train_file")
        # The default names may be absent (no validation file: split train; no test file: no test). A name the
        # user chose must exist: a typo must not silently turn into a validation split.
        self.val_path = self._optional(val_file, "val_file", default="validation")
        self.test_path = self._optional(test_file, "test_file", default="test")
        self.predict_path = self._optional(predict_file, "predict_file", default=None) or self.test_path
        self.datasets: dict[str, EncodedDataset] = {}

    def _optional(self, name: Optional[str], field: str, default: Optional[str]) -> Optional[Path]:
        if not name:
            return None
        path = resolve_data_file(name, self.data_dir)
        if path is None and name != default:
            return self._require(name, field)
        return path

    def _require(self, name: str, field: str) -> Path:
        path = resolve_data_file(name, self.data_dir)
        if path is None:
            where = f" in data_dir {self.data_dir!r}" if self.data_dir else ""
            raise DataError(f"{field}: no file {name!r}{where} (tried suffixes .jsonl, .json, .csv, .tsv)")
        return path

    # ---- everything below is read once, lazily, at the first access (link_arguments time) ----

    def _read(self, path: Path, label_required: bool = True) -> list[Record]:
        records = read_records(path, self.text_fields, self.label_field, self.text_separator, label_required,
                               self.label_type)
        return self._cut_long_texts(records, path)

    def _cut_long_texts(self, records: list[Record], path: Path) -> list[Record]:
        """Records with texts over ``max_chars`` cut, and one warning naming the first cut line of the file."""
        texts, cuts = cut_texts([r.text for r in records], [r.line for r in records], self.max_chars)
        if cuts is None:
            return records
        warn_cuts(cuts, str(path), cut_reason(self.max_length, self._max_chars_given))
        return [r if len(r.text) == len(t) else replace(r, text=t) for r, t in zip(records, texts, strict=True)]

    @cached_property
    def _train_file_records(self) -> list[Record]:
        return self._read(self.train_path)

    @cached_property
    def _splits(self) -> dict[str, list[Record]]:
        train = self._train_file_records
        splits = {"train": train}
        if self.val_path is not None:
            splits["validation"] = self._read(self.val_path)
        else:
            train_idx, val_idx = stratified_split([r.label for r in train], self.val_fraction, self.seed)
            splits["train"] = [train[i] for i in train_idx]
            splits["validation"] = [train[i] for i in val_idx]
        if self.test_path is not None:
            splits["test"] = self._read(self.test_path)
        self._check_labels(splits)
        return splits

    def _split_path(self, split: str) -> Optional[Path]:
        return {"train": self.train_path, "validation": self.val_path or self.train_path, "test": self.test_path}[split]

    def _check_labels(self, splits: dict[str, list[Record]]) -> None:
        """Every label of every split is a class the model can learn, read unambiguously; raises a DataError
        naming the first offending line. Checked before any Trainer, logger or run directory exists."""
        if self.label_type is None:
            problem = ambiguous_labels((r.label_kind or "string", r.label or "", f"{self._split_path(name)}:{r.line}")
                                       for name, records in splits.items() for r in records)
            if problem:
                raise DataError(problem)
        trained = {r.label for r in splits["train"]}
        source = "the label list" if self.fixed_labels else f"the training data ({len(self.label_names)} labels)"
        labelled = [(r.label or "", f"{self._split_path(name)}:{r.line}") for name, records in splits.items()
                    for r in records]
        problem = one_class(trained, str(self.train_path)) or unlearnable_label(labelled, set(self.label_names),
                                                                                 trained, source)
        if problem:
            raise DataError(problem)

    @cached_property
    def label_names(self) -> list[str]:
        """Class names; index = class id."""
        if self.fixed_labels is not None:
            try:
                names = [as_label(label, self.label_type) for label in self.fixed_labels]
            except ValueError as err:
                raise DataError(f"labels: {err}") from None
            if len(set(names)) != len(names):  # after reading them as label_type: "01" and "1" are one int
                raise DataError("labels: the fixed label list has duplicates")
            return names
        return sorted({r.label for r in self._train_file_records}, key=label_sort_key)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def class_counts(self) -> list[int]:
        """Examples per class in the training split (after any validation split)."""
        counts = Counter(r.label for r in self._splits["train"])
        return [counts.get(label, 0) for label in self.label_names]

    @property
    def label_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.label_names)}

    def split_records(self, stage: str) -> list[Record]:
        if stage == "predict":
            if self.predict_path is None:
                raise DataError("predict_file: no file to predict on (set data.init_args.predict_file)")
            return self._read(self.predict_path, label_required=False)
        if stage not in self._splits:
            raise DataError(f"test_file: no {stage} file found (set data.init_args.test_file)")
        return self._splits[stage]

    def split_texts(self) -> dict[str, Any]:
        """The texts of every split as the model sees them before tokenizing (fields joined, long texts cut), for
        the leakage warning at the start of ``fit`` (``fenlei.data.leakage.warn_split_leakage``)."""
        # Plain dicts (the fields of fenlei.data.leakage.SplitTexts): datamodules stand below fenlei.data.
        return {name: {"texts": [r.text for r in records], "path": self._split_path(name),
                       "from_train": name == "validation" and self.val_path is None}
                for name, records in self._splits.items()}

    def run_files(self) -> dict[str, str]:
        """The files this DataModule adds to a run directory, by kind (``labels``: the label vocabulary in class-id
        order). The run directory's owner (``fenlei.training.run_dir``) names and writes them."""
        return {"labels": json.dumps(self.label_names, ensure_ascii=False, indent=1) + "\n"}

    # ---- tokenization and loaders ----

    def prepare_data(self) -> None:
        self._splits  # noqa: B018 - validate every file before any process starts work

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        tokenizer = from_pretrained(AutoTokenizer.from_pretrained, self.tokenizer_name, option="--data.init_args.tokenizer")
        if self.markers is not None:
            # Special tokens: never split into word pieces, never lower-cased away.
            tokenizer.add_tokens(self.markers.tokens, special_tokens=True)
        return tokenizer

    @property
    def vocab_size(self) -> Optional[int]:
        """Tokenizer size when markers add tokens (the model resizes its embeddings to it), else None."""
        return len(self.tokenizer) if self.markers is not None else None

    def model_text(self, text: str) -> str:
        """The text as the model sees it: cut to ``max_chars``, with feature markers when configured."""
        text = text[: self.max_chars]  # what training saw; texts of the data files are cut (and warned of) on reading
        return self.markers(text) if self.markers is not None else text

    def _tokenize(self, records: list[Record]) -> list[list[int]]:
        """Token ids (unpadded, truncated) of the texts as the model sees them."""
        texts = [self.model_text(r.text) for r in records]
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

    def _encode(self, records: list[Record], labelled: bool) -> EncodedDataset:
        labels = [self.label_to_id[r.label] for r in records] if labelled else None
        return EncodedDataset(self._tokenize(records), labels)

    def setup(self, stage: Optional[str] = None) -> None:
        wanted = {"fit": ["train", "validation"], "validate": ["validation"], "test": ["test"], "predict": ["predict"]}
        for split in wanted.get(stage or "fit", ["train", "validation"]):
            if split not in self.datasets:
                records = self.split_records(split)
                # Prediction files may carry labels; they are used (for metrics) only when all are known classes.
                labelled = split != "predict" or all(r.label in self.label_to_id for r in records)
                self.datasets[split] = self._encode(records, labelled)

    def train_token_ids(self) -> list[int]:
        """The distinct token ids of the training split (what ``embedding_rows: seen`` trains)."""
        self.setup("fit")
        return sorted({i for ids in self.datasets["train"].input_ids for i in ids})

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        if train and self.length_grouping:
            sampler = LengthGroupedSampler(dataset.lengths, self.batch_size, self.mega_batch_factor, self.seed)
        elif train:
            sampler = EpochRandomSampler(len(dataset), self.seed)
        else:
            sampler = FixedOrderSampler(sorted_by_length(dataset.lengths))
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            collate_fn=PadCollator(self.tokenizer.pad_token_id or 0),
            num_workers=self.num_workers,
            # An own generator keeps DataLoader from drawing its base seed from the global RNG, which dropout
            # uses: a resumed run then draws exactly the masks an uninterrupted run draws.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", train=False)
