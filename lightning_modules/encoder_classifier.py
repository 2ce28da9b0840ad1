"""Classifiers of text: the classification task shared by every classifier module (loss, metrics, steps, test
report, predictions), and the encoder classifier (any Hugging Face ``AutoModel`` encoder, a pooling step and a
classification head)."""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torchmetrics import MaxMetric

from lightning_modules.encoder_base import EncoderModule, masked_mean  # noqa: F401 - masked_mean re-exported
from lightning_modules.metrics import calibration_safe_probs, classification_metrics
from losses import ClassificationLoss, with_class_counts


def check_label_names(label_names: Optional[list[str]], num_classes: int) -> None:
    if label_names is not None and len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label names for num_classes={num_classes}")


class ClassificationModule(pl.LightningModule):
    """The classification task: loss, per-stage metrics, steps, the test report and predictions.

    A subclass provides the model (``forward(input_ids, attention_mask) -> logits``) and the optimiser, saves
    ``num_classes`` and ``label_names`` among its hyperparameters, and calls :meth:`_init_classification` once its
    model is built.
    """

    def _init_classification(self, num_classes: int, class_counts: Optional[list[int]],
                             loss: Optional[ClassificationLoss]) -> None:
        self.loss_fn = with_class_counts(loss, class_counts)
        self.train_metrics = classification_metrics(num_classes, prefix="train/")
        self.val_metrics = classification_metrics(num_classes, prefix="val/")
        self.test_metrics = classification_metrics(num_classes, prefix="test/")
        self.val_f1_best = MaxMetric()
        # Per-row (logits, labels, row index) of the test loop and of a ``validate`` command's loop: the rows of
        # ``test/predictions.jsonl`` and ``validate/predictions.jsonl``. The validation loops inside ``fit`` keep none.
        self._row_outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]]] = {
            "val": [], "test": []}
        self.validation_rows: Any = None

    # ---- steps ----

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = self.loss_fn(logits, batch["labels"])
        self.train_metrics["acc"].update(logits.detach(), batch["labels"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(logits))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/acc", self.train_metrics["acc"].compute())
        self.train_metrics.reset()

    def on_train_start(self) -> None:
        # Sanity-check batches must not count towards the first real validation epoch or the best-so-far value.
        self.val_metrics.reset()
        self.val_f1_best.reset()

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = self.loss_fn(logits, batch["labels"])
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(calibration_safe_probs(logits), batch["labels"])
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(logits), sync_dist=True)
        return logits

    def _keep_rows(self, stage: str, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> None:
        index = batch.get("index")
        self._row_outputs[stage].append((logits.detach().float().cpu(), batch["labels"].cpu(),
                                         index.cpu() if index is not None else None))

    def _validate_command(self) -> bool:
        from lightning.pytorch.trainer.states import TrainerFn

        return self._trainer is not None and self.trainer.state.fn == TrainerFn.VALIDATING

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self._eval_step(batch, "val")
        if self._validate_command():
            self._keep_rows("val", batch, logits)

    def on_validation_epoch_start(self) -> None:
        self._row_outputs["val"].clear()
        self.validation_rows = None

    def _split_rows(self, stage: str) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(logits, targets, SplitRows or None) of the kept rows of ``stage``, gathered from every process."""
        from lightning_modules.test_report import SplitRows

        outputs = self._row_outputs[stage]
        logits = torch.cat([z for z, _, _ in outputs])
        targets = torch.cat([t for _, t, _ in outputs])
        rows = torch.cat([i for _, _, i in outputs]) if all(i is not None for _, _, i in outputs) else None
        outputs.clear()
        if self.trainer.world_size > 1:
            logits = self.all_gather(logits).reshape(-1, logits.shape[-1])
            targets = self.all_gather(targets).reshape(-1)
            rows = self.all_gather(rows).reshape(-1) if rows is not None else None
        names = self.hparams.label_names or [str(i) for i in range(self.hparams.num_classes)]
        split_rows = (SplitRows(rows.numpy(), targets.numpy(), logits.numpy(), names) if rows is not None
                      else None)
        return logits, targets, split_rows

    def on_validation_epoch_end(self) -> None:
        if self._validate_command() and self._row_outputs["val"]:
            # Written into the run's validate/ by fenlei.training.callbacks.ValidationRowsWriter.
            self.validation_rows = self._split_rows("val")[2]
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        f1_macro = values.pop("val/f1_macro")
        self.log("val/f1_macro", f1_macro, prog_bar=True)
        self.log_dict(values)
        if not self.trainer.sanity_checking:
            self.val_f1_best.update(f1_macro)
            self.log("val/f1_macro_best", self.val_f1_best.compute())

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self._eval_step(batch, "test")
        self._keep_rows("test", batch, logits)

    def on_test_epoch_start(self) -> None:
        self._row_outputs["test"].clear()

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        self.test_metrics.reset()
        self.log_dict(values)
        logits, targets, split_rows = self._split_rows("test")
        from lightning_modules.test_report import TestReport

        # Written into the run's test/ by fenlei.training.callbacks.TestReportWriter.
        names = self.hparams.label_names or [str(i) for i in range(self.hparams.num_classes)]
        self.test_report = TestReport({k: float(v) for k, v in values.items()}, targets.numpy(),
                                      logits.argmax(-1).numpy(), names, split_rows=split_rows)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"]).float()
        return {"index": batch["index"], "probs": torch.softmax(logits, dim=-1)}


class EncoderClassifier(EncoderModule, ClassificationModule):
    """Text classifier over a pretrained encoder.

    Args:
        loss: Loss module (``losses.CrossEntropyLoss`` by default); class weights come from ``class_counts``.
        *args, **kwargs: The encoder's hyperparameters (:class:`~lightning_modules.encoder_base.EncoderModule`).
    """

    def __init__(self, *args: Any, loss: Optional[ClassificationLoss] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hp = self.hparams
        check_label_names(hp.label_names, hp.num_classes)
        self._build_encoder(hp.num_classes)
        self._init_classification(hp.num_classes, hp.class_counts, loss)
