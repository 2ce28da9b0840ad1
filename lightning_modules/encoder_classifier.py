"""Encoder classifier: any Hugging Face encoder (``AutoModel``), a pooling step and a classification head."""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn
from torchmetrics import MaxMetric

from lightning_modules.encoder_base import EncoderModule, from_cli, masked_mean  # noqa: F401 - masked_mean re-exported
from lightning_modules.metrics import calibration_safe_probs, classification_metrics
from lightning_modules.optim import Schedule
from losses import ClassificationLoss, CrossEntropyLoss


class EncoderClassifier(EncoderModule):
    """Text classifier over a pretrained encoder.

    Args:
        pretrained: HF hub id or local folder of the encoder, or ``packaged:minilm`` / ``packaged:mpnet``.
        num_classes: Number of classes (linked from the DataModule; not set in YAML).
        label_names: Class names in id order (linked from the DataModule; stored in checkpoints for export).
        class_counts: Training examples per class (linked; feeds class-weighted losses).
        vocab_size: Tokenizer size when the DataModule added marker tokens (linked); the embeddings are resized.
        pooling: ``cls`` (first token) or ``mean`` (mean over non-padding tokens; native for sentence encoders).
        head: ``linear`` (dropout + linear) or ``mlp`` (Linear-GELU-Dropout-Linear).
        head_hidden_size: Width of the MLP head's hidden layer (default: the encoder's hidden size).
        dropout: Dropout in the head.
        freeze_embeddings: Keep the embedding block frozen.
        freeze_layers: Keep the bottom N transformer layers frozen (embeddings are frozen too when N > 0).
        loss: Loss module (``losses.CrossEntropyLoss`` by default); class weights come from ``class_counts``.
        lr: Peak learning rate of the encoder's top layer.
        head_lr: Peak learning rate of the head (default ``lr``); a larger head lr lets the randomly initialised
            head catch up with the pretrained encoder.
        weight_decay: AdamW weight decay (not applied to biases and norms).
        layerwise_lr_decay: Layer ``i`` from the top gets ``lr * decay**i``; embeddings get one more factor.
        warmup: Warmup length: a fraction of all training steps if < 1, else a number of steps.
        schedule: Decay after warmup: ``linear``, ``cosine`` or ``constant``.
        fused_adamw: Use torch's fused AdamW kernel (faster on CPU and GPU).
    """

    def __init__(
        self,
        pretrained: str,
        num_classes: int = 2,
        label_names: Optional[list[str]] = None,
        class_counts: Optional[list[int]] = None,
        vocab_size: Optional[int] = None,
        pooling: Literal["cls", "mean"] = "cls",
        head: Literal["linear", "mlp"] = "linear",
        head_hidden_size: Optional[int] = None,
        dropout: float = 0.1,
        freeze_embeddings: bool = False,
        freeze_layers: int = 0,
        loss: Optional[ClassificationLoss] = None,
        lr: float = 5e-5,
        head_lr: Optional[float] = None,
        weight_decay: float = 0.01,
        layerwise_lr_decay: float = 1.0,
        warmup: float = 0.06,
        schedule: Schedule = "linear",
        fused_adamw: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["loss"] if isinstance(loss, nn.Module) and not from_cli() else None)
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label names for num_classes={num_classes}")
        self._build_encoder(num_classes)
        self.loss_fn = loss if loss is not None else CrossEntropyLoss()
        if class_counts is not None:
            self.loss_fn.set_class_counts(class_counts)
        self.train_metrics = classification_metrics(num_classes, prefix="train/")
        self.val_metrics = classification_metrics(num_classes, prefix="val/")
        self.test_metrics = classification_metrics(num_classes, prefix="test/")
        self.val_f1_best = MaxMetric()
        self._test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

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

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
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
        self._test_outputs.append((logits.detach().float().argmax(-1).cpu(), batch["labels"].cpu()))

    def on_test_epoch_start(self) -> None:
        self._test_outputs.clear()

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        self.test_metrics.reset()
        self.log_dict(values)
        preds = torch.cat([p for p, _ in self._test_outputs])
        targets = torch.cat([t for _, t in self._test_outputs])
        self._test_outputs.clear()
        if self.trainer.world_size > 1:
            preds = self.all_gather(preds).reshape(-1)
            targets = self.all_gather(targets).reshape(-1)
        from fenlei.training.reporting import TestReport

        # Written into the run's test/ by fenlei.training.callbacks.TestReportWriter.
        names = self.hparams.label_names or [str(i) for i in range(self.hparams.num_classes)]
        self.test_report = TestReport({k: float(v) for k, v in values.items()}, targets.numpy(), preds.numpy(), names)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"]).float()
        return {"index": batch["index"], "probs": torch.softmax(logits, dim=-1)}
