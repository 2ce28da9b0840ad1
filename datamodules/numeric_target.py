"""Numeric targets (e.g. the length of an answer) as ordinal bins, with the raw value kept next to each bin id.

Every batch carries ``labels`` (bin ids, for classifiers over bins, bin-index regressors and ordinal heads) and
``targets`` (the raw number, for regressors and for ``target_mae``). The binning is fitted on the training split
only (after the optional outlier filter, which also touches the training split only) and then frozen: the
validation, test and prediction files are binned with the train-fitted edges or centroids, so no statistic of
held-out data leaks into the labels. Like the parent class, ``num_classes`` (the number of bins) is known right
after ``__init__``, which LightningCLI's ``link_arguments`` needs.

The fitted binning is saved into the run directory (``binning.json``) and into every checkpoint (DataModule state);
loading a checkpoint whose binning differs from the one fitted now (the training data changed) is an error.
"""

from __future__ import annotations

import json
import math
import random
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import numpy as np

from datamodules.binning import Binner, BinningReport, OutlierFilter, binner_from_dict, build_binner
from datamodules.labels import one_class
from datamodules.markers import FeatureMarkers, text_feature
from datamodules.readers import DataError, Record
from datamodules.text_classification import EncodedDataset, TextClassificationDataModule


def parse_targets(records: list[Record], path: Path | None, field: str) -> np.ndarray:
    """Float targets of labelled records; a non-numeric or non-finite value is a DataError naming the line."""
    values = np.empty(len(records), dtype=np.float64)
    for i, record in enumerate(records):
        try:
            value = float(record.label)
        except (TypeError, ValueError):
            raise DataError(f"{path}:{record.line}: field {field!r} must be a number, got {record.label!r}") from None
        if not math.isfinite(value):
            raise DataError(f"{path}:{record.line}: field {field!r} must be finite, got {record.label!r}")
        values[i] = value
    return values


def bin_names(binner: Binner) -> list[str]:
    """Readable, unique class names: ``0: [4, 32)`` for interval bins, ``0: ~25`` (bin median) for clusters."""
    names = []
    for b in range(binner.num_bins):
        if binner.bin_edges is not None:
            low, high = binner.bin_edges[b], binner.bin_edges[b + 1]
            close = "]" if b == binner.num_bins - 1 else ")"
            names.append(f"{b}: [{low:g}, {high:g}{close}")
        else:
            names.append(f"{b}: ~{binner.bin_medians[b]:g}")
    return names


class NumericTargetDataModule(TextClassificationDataModule):
    """Text with a numeric target, binned into ordered classes fitted on the training split.

    Takes every argument of ``TextClassificationDataModule`` (``label_field`` names the numeric target field;
    ``labels`` and ``label_type`` do not apply) plus:

    Args:
        binning: Binning scheme, fitted on train only: ``{"scheme": "quantile", "num_bins": 4}``,
            ``{"scheme": "equal_width", "num_bins": 5}``, ``{"scheme": "manual", "edges": [0, 20, 40, 1000]}`` or
            ``{"scheme": "kmeans", "k": 4}`` / ``{"scheme": "kmeans", "k_range": [2, 8]}`` (k by silhouette), with
            ``"features": ["words", "chars", "question_marks", "kw:[CALCULATE]", ...]`` (text features of the
            prompt, standardised with the target; keyword flags use ``markers`` rules or the defaults). Any scheme
            takes ``"log1p": true``. Bin ids are ordered by the target.
        outlier_filter: Drop extreme *training* rows before fitting the bins and training:
            ``{"upper_quantile": 0.99}`` or ``{"lower": 5, "upper": 200}`` (validation and test rows are kept).
        binning_file: A ``binning.json`` of an earlier run: reuse its fitted bins instead of fitting (for
            transfer tests on other data with the bins the model was trained on).
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
        binning: dict[str, Any] = {"scheme": "quantile", "num_bins": 4},  # noqa: B006 - shown in --help
        outlier_filter: Optional[dict[str, Any]] = None,
        binning_file: Optional[str] = None,
    ) -> None:
        super().__init__(
            tokenizer=tokenizer, data_dir=data_dir, train_file=train_file, val_file=val_file, test_file=test_file,
            predict_file=predict_file, text_fields=text_fields, text_separator=text_separator,
            label_field=label_field, labels=None, val_fraction=val_fraction, max_length=max_length,
            max_chars=max_chars,
            batch_size=batch_size, eval_batch_size=eval_batch_size, length_grouping=length_grouping,
            mega_batch_factor=mega_batch_factor, num_workers=num_workers, seed=seed, markers=markers,
        )
        try:
            self._unfitted_binner = build_binner(dict(binning))
            self.outlier_filter = OutlierFilter(**dict(outlier_filter)) if outlier_filter else None
        except (TypeError, ValueError) as err:
            raise DataError(f"binning/outlier_filter: {err}") from None
        self.binning_spec = dict(binning)
        self.binning_path = Path(binning_file) if binning_file else None
        if self.binning_path is not None and not self.binning_path.is_file():
            raise DataError(f"binning_file: no file {str(self.binning_path)!r}")
        # Keyword flags for k-means features come from the configured markers, or the default rules.
        self._feature_rules = self.markers or FeatureMarkers()

    # ---- reading and splitting (train-only statistics) ----

    def _targets(self, records: list[Record], path: Optional[Path]) -> np.ndarray:
        return parse_targets(records, path, self.label_field)

    @cached_property
    def _splits(self) -> dict[str, list[Record]]:
        train = self._train_file_records
        self._targets(train, self.train_path)  # fail early, naming the line, on a non-numeric target
        splits: dict[str, list[Record]] = {}
        if self.val_path is not None:
            splits["validation"] = self._read(self.val_path)
            self._targets(splits["validation"], self.val_path)
        else:
            # A seeded random split: stratifying needs classes, and the bins are not known before the split.
            order = list(range(len(train)))
            random.Random(self.seed).shuffle(order)
            n_val = max(1, round(self.val_fraction * len(train)))
            val_idx = set(order[:n_val])
            splits["validation"] = [r for i, r in enumerate(train) if i in val_idx]
            train = [r for i, r in enumerate(train) if i not in val_idx]
        self.outliers_removed = 0
        if self.outlier_filter is not None:
            targets = self._targets(train, self.train_path)
            keep = self.outlier_filter.fit(targets).mask(targets)
            self.outliers_removed = int((~keep).sum())
            train = [r for r, k in zip(train, keep, strict=True) if k]
            if not train:
                raise DataError(f"outlier_filter removed every training row of {self.train_path}")
        splits["train"] = train
        if self.test_path is not None:
            splits["test"] = self._read(self.test_path)
            self._targets(splits["test"], self.test_path)
        return splits

    @cached_property
    def _feature_names(self) -> list[str]:
        """Text features the binning uses: those of the saved binning when reusing one, else of the spec."""
        source = self.binner if self.binning_path is not None else self._unfitted_binner
        return list(getattr(source, "features", None) or [])

    def features(self, records: list[Record]) -> Optional[np.ndarray]:
        """The extra k-means columns for these records (None when the scheme uses none)."""
        if not self._feature_names:
            return None
        try:
            return np.array([[text_feature(n, r.text, self._feature_rules) for n in self._feature_names] for r in records])
        except ValueError as err:
            raise DataError(f"binning.features: {err}") from None

    @cached_property
    def _train_features(self) -> Optional[np.ndarray]:
        return self.features(self._splits["train"])

    @cached_property
    def binner(self) -> Binner:
        """The fitted binning (train split only), or the one loaded from ``binning_file``."""
        if self.binning_path is not None:
            try:
                saved = json.loads(self.binning_path.read_text(encoding="utf-8"))
                return binner_from_dict(saved["binner"])
            except (KeyError, ValueError, TypeError) as err:
                raise DataError(f"{self.binning_path}: not a fenlei binning file ({err})") from None
        try:
            return self._unfitted_binner.fit(self.train_targets, self._train_features)
        except ValueError as err:
            raise DataError(f"binning {self.binning_spec}: {err}") from None

    @cached_property
    def label_names(self) -> list[str]:
        """Bin names. Bins fitted now must hold at least two training classes (``datamodules.labels.one_class``:
        one bin, e.g. constant targets under quantile bins, would train a classifier with nothing to tell apart).
        Bins from ``binning_file`` are not checked: they were fitted elsewhere, and a transfer test may read a
        train file that they do not spread."""
        names = bin_names(self.binner)
        if self.binning_path is not None:
            return names
        filled = {names[b] for b in np.unique(self.binner.transform(self.train_targets, self._train_features))}
        problem = one_class(filled, str(self.train_path))
        if problem:
            raise DataError(f"{problem} (binning {self.binning_spec} gives {len(names)} bin(s) for these targets)")
        return names

    def bins(self, records: list[Record], path: Optional[Path]) -> np.ndarray:
        return self.binner.transform(self._targets(records, path), self.features(records))

    @property
    def class_counts(self) -> list[int]:
        bins = self.binner.transform(self.train_targets, self._train_features)
        return np.bincount(bins, minlength=self.num_classes).astype(int).tolist()

    @property
    def bin_medians(self) -> list[float]:
        """Median training target of each bin: what a bin prediction means in target units."""
        return [float(m) for m in self.binner.bin_medians]

    @property
    def decode_boundaries(self) -> Optional[list[float]]:
        """The inner edges that turn a regressed target value into a bin id, or None for k-means clusters
        (not intervals once text features are used: a regressed value then goes to the nearest bin median)."""
        if self.binner.bin_edges is None:
            return None
        return [float(e) for e in self.binner.bin_edges[1:-1]]

    @cached_property
    def train_targets(self) -> np.ndarray:
        """Targets of the training split (after the validation split and the outlier filter), parsed once."""
        return self._targets(self._splits["train"], self.train_path)

    def report(self) -> BinningReport:
        return self.binner.report(self.train_targets, self._train_features, seed=self.seed)

    # ---- run directory and checkpoints ----

    def binning_state(self) -> dict[str, Any]:
        return {
            "spec": self.binning_spec,
            "binner": self.binner.to_dict(),
            "outlier_filter": None if self.outlier_filter is None else self.outlier_filter.to_dict(),
        }

    def run_files(self) -> dict[str, str]:
        """``labels`` plus ``binning``: the fitted bins, the train report and the outlier filter."""
        files = super().run_files()
        report = self.report().to_dict()
        train = self.train_targets
        payload = {
            **self.binning_state(),
            "label_names": self.label_names,
            "train_report": report,
            "outliers_removed": getattr(self, "outliers_removed", 0),
            "train_target": {"n": int(len(train)), "median": float(np.median(train)), "mean": float(train.mean())},
        }
        files["binning"] = json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
        return files

    def state_dict(self) -> dict[str, Any]:
        # JSON text: checkpoints must load with torch.load(weights_only=True).
        return {"binning_json": json.dumps(self.binning_state()["binner"], sort_keys=True)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("binning_json")
        if saved is None:
            return
        current = json.dumps(self.binner.to_dict(), sort_keys=True)
        if not _same_binning(json.loads(saved), json.loads(current)):
            raise DataError(
                "the checkpoint was trained with other bins than the ones fitted on the training data now (the "
                "training data or the binning changed); pass the run's binning.json as data.init_args.binning_file"
            )

    # ---- encoding ----

    def _encode(self, records: list[Record], labelled: bool) -> EncodedDataset:
        input_ids = self._tokenize(records)
        if not labelled:
            return EncodedDataset(input_ids, None)
        targets = self._targets(records, None)
        bins = self.binner.transform(targets, self.features(records))
        return EncodedDataset(input_ids, bins.tolist(), targets.tolist())

    def setup(self, stage: Optional[str] = None) -> None:
        if stage == "predict" and "predict" not in self.datasets:
            records = self.split_records("predict")
            labelled = all(r.label is not None for r in records)
            if labelled:
                self._targets(records, self.predict_path)
            self.datasets["predict"] = self._encode(records, labelled)
            return
        super().setup(stage)


def _same_binning(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-9) -> bool:
    """Equal up to float noise (k-means refits can differ in the last bits across BLAS builds)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_binning(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_binning(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= tol * max(1.0, abs(float(a)), abs(float(b)))
        except (TypeError, ValueError):
            return False
    return a == b
