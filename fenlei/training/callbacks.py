"""Callbacks and plugins that every fenlei run gets: exact resume, atomic checkpoints, run-directory files,
and the reports of ``test`` and ``predict``."""

from __future__ import annotations

import io
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fenlei.io import atomic_write_bytes, atomic_write_text
from fenlei.predictions import prediction_record
from fenlei.training.checkpoints import WEIGHTS_ONLY, refusing_pickled_code
from fenlei.training.run_dir import RunDir


class RngStateCallback(pl.Callback):
    """Store the torch/numpy/python RNG states in every checkpoint and restore them on resume.

    Lightning restores model, optimizer and loop state but not the global RNGs, so dropout after a resume would
    draw different masks than the uninterrupted run; with this callback a run killed after epoch k and resumed
    with ``--ckpt_path last`` ends with exactly the same weights and metrics.
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["fenlei_rng_states"] = collect_rng_states()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("fenlei_rng_states")
        if states is not None:
            set_rng_states(states)


class EpochClock(pl.Callback):
    """Wall seconds of the training epochs, summed over the sessions of a resumed fit (kept in the checkpoint).

    An epoch cut short by a kill is not counted: the resumed fit trains it again, and only that run of it is
    the work its samples/s figure describes.
    """

    def __init__(self) -> None:
        self.seconds = 0.0  # the finished epochs' wall time
        self._epoch_started: Optional[float] = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._epoch_started is not None:
            self.seconds += time.perf_counter() - self._epoch_started
        self._epoch_started = None

    def state_dict(self) -> dict[str, Any]:
        return {"finished_seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seconds = float(state_dict["finished_seconds"])


def collect_rng_states() -> dict[str, Any]:
    """RNG states as tensors and plain Python values, so checkpoints still load with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file and rename: a kill mid-write never corrupts ``last.ckpt``; read them
    with ``weights_only=True`` whatever the caller or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says (``fit/test
    --ckpt_path``, resume)."""

    def load_checkpoint(self, path: Any, map_location: Optional[Any] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        with refusing_pickled_code(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=WEIGHTS_ONLY)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())


class RunFilesCallback(pl.Callback):
    """Write the run directory's bookkeeping: ``labels.json`` at fit start, ``run_summary.json`` at fit end.

    ``run_summary.json`` is written last and atomically, so its presence marks a finished fit.
    """

    def __init__(self) -> None:
        self._started = 0.0
        self._train_seconds = 0.0
        self._train_samples = 0
        self._epoch_started: Optional[float] = None
        self._val_started: Optional[float] = None

    # Training throughput: wall time of the training epochs (data loading included) minus the validation runs
    # inside them, over the samples seen; the figure the benchmarks compare with HF Trainer's train() time.
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._train_samples += int(batch["input_ids"].shape[0]) if isinstance(batch, dict) and "input_ids" in batch else 0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_started is not None and self._epoch_started is not None and not trainer.sanity_checking:
            self._train_seconds -= time.perf_counter() - self._val_started
        self._val_started = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._epoch_started is not None:
            self._train_seconds += time.perf_counter() - self._epoch_started
        self._epoch_started = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.time()
        if trainer.is_global_zero:
            run_dir = RunDir(Path(trainer.default_root_dir))
            run_dir.clear_summary()
            datamodule = trainer.datamodule
            if datamodule is not None and hasattr(datamodule, "run_files"):
                run_dir.write_run_files(datamodule.run_files())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        checkpoint = trainer.checkpoint_callback
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        RunDir(Path(trainer.default_root_dir)).write_summary(
            {
                "finished": True,
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "fit_seconds": round(time.time() - self._started, 2),
                "train_seconds": round(self._train_seconds, 2),
                "train_samples": self._train_samples,
                "train_samples_per_s": round(self._train_samples / self._train_seconds, 2) if self._train_seconds > 0 else None,
                # Throughput depends on it (bf16 autocast is native on some CPUs, fp32 on others).
                "precision": str(trainer.precision),
                "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
                "best_score": float(checkpoint.best_model_score) if getattr(checkpoint, "best_model_score", None) is not None else None,
                "last_metrics": metrics,
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
            },
        )


class PredictionWriter(pl.callbacks.BasePredictionWriter):
    """Write ``predict/predictions.jsonl`` in the run directory: one row per input row, in input order, with
    the predicted label, its probability and the top-k labels (written atomically at the end); numeric-target
    modules add ``value``, multi-field generative classifiers ``fields`` (each field's label and confidence)."""

    def __init__(self, top_k: int = 5) -> None:
        super().__init__(write_interval="epoch")
        self.top_k = top_k

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        index = torch.cat([b["index"] for b in batches])
        probs = torch.cat([b["probs"] for b in batches])
        order = torch.argsort(index)
        index, probs = index[order], probs[order]
        # Numeric-target modules also predict a number (the regressor's output or the bin's median).
        values = torch.cat([b["values"] for b in batches])[order].tolist() if "values" in batches[0] else None
        # Multi-field generative classifiers also give every answer field's label probabilities.
        fields = None
        if "field_probs" in batches[0]:
            fields = [(name, labels, torch.cat([b["field_probs"][k] for b in batches])[order])
                      for k, (name, labels) in enumerate(pl_module.field_label_names())]
        names = getattr(pl_module.hparams, "label_names", None) or [str(i) for i in range(probs.shape[-1])]
        lines = []
        for n, (row, p_row) in enumerate(zip(index.tolist(), probs.float().numpy(), strict=True)):
            record = {"row": row, **prediction_record(p_row, names, self.top_k, digits=6)}
            if values is not None:
                record["value"] = round(float(values[n]), 4)
            if fields is not None:
                record["fields"] = {name: {"label": labels[int(p[n].argmax())], "confidence": round(float(p[n].max()), 6)}
                                    for name, labels, p in fields}
            lines.append(json.dumps(record, ensure_ascii=False))
        atomic_write_text(RunDir(Path(trainer.default_root_dir)).predictions, "\n".join(lines) + "\n")


class TestReportWriter(pl.Callback):
    """Write the run's ``test/`` report (per-class tables, confusion matrix, metrics; see
    :func:`fenlei.training.reporting.write_test_report`) from the ``test_report`` that the LightningModule sets
    in its ``on_test_epoch_end``: one writer for every module, which only says what it predicted.

    ``on_test_end`` runs after the module's ``on_test_epoch_end`` (callbacks' epoch-end hooks run before the
    module's). A module without a ``test_report`` (or with ``None``) gets no report.
    """

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.test_report = None  # a report of an earlier test run in this process must not be written again

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        report = getattr(pl_module, "test_report", None)
        if report is None or not trainer.is_global_zero or trainer.fast_dev_run:
            return
        from fenlei.training.reporting import write_test_report

        write_test_report(RunDir(Path(trainer.default_root_dir)).test, report, loggers=trainer.loggers,
                          records=split_records(trainer, "test"))


class ValidationRowsWriter(pl.Callback):
    """Write ``validate/predictions.jsonl`` (one line per validation row, with its logits) after a ``validate``
    command, from the ``validation_rows`` its LightningModule sets; ``fenlei report`` fits the run's temperature on
    it. A module without them gets no file."""

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.validation_rows = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = getattr(pl_module, "validation_rows", None)
        if rows is None or trainer.sanity_checking or not trainer.is_global_zero or trainer.fast_dev_run:
            return
        from fenlei.training.reporting import write_split_predictions

        write_split_predictions(RunDir(Path(trainer.default_root_dir)).validate, rows,
                                split_records(trainer, "validation"))


def split_records(trainer: pl.Trainer, split: str) -> Optional[list[Any]]:
    """The records (text, line) of a split of the trainer's DataModule, or None where it cannot list them."""
    datamodule = trainer.datamodule
    lister = getattr(datamodule, "split_records", None)
    if lister is None:
        return None
    try:
        return list(lister(split))
    except ValueError:  # DataError: no such split; the predictions are written without texts
        return None
