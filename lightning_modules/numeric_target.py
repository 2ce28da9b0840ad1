"""Modules for numeric targets binned by ``NumericTargetDataModule``: every one is judged in target units.

- ``BinClassifier``: classification over the bins with fenlei's losses (cross-entropy, class weights, focal,
  label smoothing); a predicted bin stands for its train median.
- ``EncoderRegressor``: regression on the raw (or log) target with MSE or Huber (``target: value``), or on the
  ordinal bin index, rounded and clipped at decode time (``target: bin_index``).
- ``OrdinalRegressor``: CORAL (one score, K-1 ordered thresholds) or CORN (K-1 conditional binary tasks), the
  principled alternatives to regressing the bin index.

All of them log, for validation and test, the same figures (``fenlei.metrics.numeric_target_report``): bin
accuracy, macro-F1, the worst bin's F1, MAE in bins, quadratic weighted kappa, and ``target_mae`` next to
``constant_mae`` (always predicting the train median), so that a labelling cannot win by being easy.
The bin medians and target statistics come from the DataModule at ``fit`` and are stored in the checkpoint.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MaxMetric

from lightning_modules.encoder_base import EncoderModule, Pooling
from losses import ClassificationLoss, with_class_counts


class NumericTargetModule(EncoderModule):
    """Shared steps and metrics; subclasses define ``num_outputs``, ``compute_loss`` and ``decode``.

    Args:
        pooling: ``cls`` or ``mean``.
        *args, **kwargs: The encoder's hyperparameters (:class:`~lightning_modules.encoder_base.EncoderModule`).
    """

    def __init__(self, *args: Any, pooling: Pooling = "mean", **kwargs: Any) -> None:
        # Numeric modules default to mean pooling (the encoder classifier to cls): configs and checkpoints that
        # leave it out depend on that.
        super().__init__(*args, pooling=pooling, **kwargs)

    def _init_numeric(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"a numeric target needs at least 2 bins, got num_classes={num_classes}")
        self.num_bins = num_classes
        # Filled from the DataModule at fit time; saved in (and restored from) every checkpoint.
        self.register_buffer("bin_medians", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("bin_boundaries", torch.full((num_classes - 1,), float("nan"), dtype=torch.float64))
        self.register_buffer("train_median", torch.zeros((), dtype=torch.float64))
        self.register_buffer("target_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("target_std", torch.ones((), dtype=torch.float64))
        self._outputs: dict[str, list[tuple[torch.Tensor, ...]]] = {"val": [], "test": []}
        self.val_f1_best = MaxMetric()

    # ---- data statistics ----

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage != "fit":
            return
        if datamodule is None or not hasattr(datamodule, "bin_medians"):
            raise ValueError(f"{type(self).__name__} needs datamodules.NumericTargetDataModule (bins and targets)")
        medians = torch.tensor(datamodule.bin_medians, dtype=torch.float64)
        if len(medians) != self.num_bins:
            raise ValueError(f"the data has {len(medians)} bins but the model was built for {self.num_bins}")
        self.bin_medians.copy_(medians)
        boundaries = datamodule.decode_boundaries
        self.bin_boundaries.fill_(float("nan"))
        if boundaries is not None:
            self.bin_boundaries.copy_(torch.tensor(boundaries, dtype=torch.float64))
        train = np.asarray(datamodule.train_targets, dtype=np.float64)
        self.train_median.fill_(float(np.median(train)))
        transformed = self.transform_target(torch.from_numpy(train))
        self.target_mean.fill_(float(transformed.mean()))
        self.target_std.fill_(float(transformed.std().clamp(min=1e-6)))

    def transform_target(self, targets: torch.Tensor) -> torch.Tensor:
        """The target as the model regresses it (before standardisation); identity unless overridden."""
        return targets

    def value_to_bin(self, values: torch.Tensor) -> torch.Tensor:
        """Bins of point predictions in target units: by the train edges, or the nearest bin median (k-means)."""
        values = values.to(torch.float64)
        if not torch.isnan(self.bin_boundaries).any():
            return torch.searchsorted(self.bin_boundaries, values.contiguous(), right=True)
        return (values[:, None] - self.bin_medians[None, :]).abs().argmin(dim=1)

    # ---- subclass interface ----

    def compute_loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(predicted bins, point predictions in target units)``."""
        raise NotImplementedError

    def bin_probs(self, outputs: torch.Tensor) -> torch.Tensor:
        """``(batch, num_bins)`` scores for ``predict`` (one-hot at the decoded bin unless overridden)."""
        bins, _ = self.decode(outputs)
        return F.one_hot(bins, self.num_bins).float()

    # ---- steps ----

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        outputs = self(batch["input_ids"], batch["attention_mask"])
        loss = self.compute_loss(outputs, batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(outputs))
        return loss

    def on_train_start(self) -> None:
        self._outputs["val"].clear()  # sanity-check batches must not count
        self.val_f1_best.reset()

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        outputs = self(batch["input_ids"], batch["attention_mask"])
        loss = self.compute_loss(outputs, batch)
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(outputs), sync_dist=True)
        bins, values = self.decode(outputs.float())
        self._outputs[stage].append(
            (bins.cpu(), values.detach().cpu().double(), batch["labels"].cpu(), batch["targets"].cpu().double())
        )

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._outputs["val"].clear()

    def on_test_epoch_start(self) -> None:
        self._outputs["test"].clear()

    def _collect(self, stage: str) -> tuple[np.ndarray, ...]:
        columns = [torch.cat(column) for column in zip(*self._outputs[stage], strict=True)]
        self._outputs[stage].clear()
        if self.trainer.world_size > 1:
            columns = [self.all_gather(c).reshape(-1) for c in columns]
        return tuple(c.numpy() for c in columns)

    def _report(self, stage: str) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """Metrics of the collected stage outputs, plus the true and predicted bins (for the test report)."""
        from fenlei.metrics import numeric_target_report

        pred_bins, pred_values, true_bins, targets = self._collect(stage)
        values = numeric_target_report(true_bins, pred_bins, targets, pred_values, self.num_bins,
                                       float(self.train_median))
        return values, true_bins, pred_bins

    def on_validation_epoch_end(self) -> None:
        if not self._outputs["val"]:
            return
        values, _, _ = self._report("val")
        f1_macro = values.pop("f1_macro")
        self.log("val/f1_macro", f1_macro, prog_bar=True)
        self.log("val/target_mae", values.pop("target_mae"), prog_bar=True)
        self.log_dict({f"val/{k}": v for k, v in values.items()})
        if not self.trainer.sanity_checking:
            self.val_f1_best.update(torch.tensor(f1_macro))
            self.log("val/f1_macro_best", self.val_f1_best.compute())

    def on_test_epoch_end(self) -> None:
        values, true_bins, pred_bins = self._report("test")
        self.log_dict({f"test/{k}": v for k, v in values.items()})
        from lightning_modules.test_report import TestReport

        # Written into the run's test/ by fenlei.training.callbacks.TestReportWriter.
        names = self.hparams.label_names or [str(i) for i in range(self.num_bins)]
        self.test_report = TestReport({f"test/{k}": float(v) for k, v in values.items()}, true_bins, pred_bins, names)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        outputs = self(batch["input_ids"], batch["attention_mask"]).float()
        _, values = self.decode(outputs)
        return {"index": batch["index"], "probs": self.bin_probs(outputs), "values": values.float()}


class BinClassifier(NumericTargetModule):
    """Classification over the bins of a numeric target; a predicted bin stands for its train median.

    Args:
        loss: Classification loss (cross-entropy by default; focal, class weights and label smoothing through
            ``losses``).
        *args, **kwargs: The encoder's hyperparameters (:class:`~lightning_modules.encoder_base.EncoderModule`).
    """

    def __init__(self, *args: Any, loss: Optional[ClassificationLoss] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hp = self.hparams
        self._build_encoder(hp.num_classes)
        self._init_numeric(hp.num_classes)
        self.loss_fn = with_class_counts(loss, hp.class_counts)

    def compute_loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_fn(outputs, batch["labels"])

    def decode(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bins = outputs.argmax(dim=-1)
        return bins, self.bin_medians[bins]

    def bin_probs(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs, dim=-1)


class EncoderRegressor(NumericTargetModule):
    """Regression on a numeric target (``target: value``) or on its ordinal bin index (``target: bin_index``).

    ``value``: the head predicts the standardised target (``log1p`` first when ``log_target``); MAE, RMSE, R2
    and Spearman are measured on the regressor's output in target units, and bins by the train edges.
    ``bin_index``: MSE on the bin id; the output is rounded half up and clipped to a bin, which stands for
    its train median.

    Args:
        target: ``value`` (the number) or ``bin_index`` (the ordinal bin id).
        loss: ``mse`` or ``huber``.
        huber_delta: Huber transition point (in standardised units for ``value``).
        log_target: Regress ``log1p(target)`` (``target: value`` only).
        *args, **kwargs: The encoder's hyperparameters (:class:`~lightning_modules.encoder_base.EncoderModule`).
    """

    def __init__(
        self,
        *args: Any,
        target: Literal["value", "bin_index"] = "value",
        loss: Literal["mse", "huber"] = "mse",
        huber_delta: float = 1.0,
        log_target: bool = False,
        **kwargs: Any,
    ) -> None:
        if log_target and target != "value":
            raise ValueError("log_target applies to target: value only")
        super().__init__(*args, **kwargs)
        self._build_encoder(1)
        self._init_numeric(self.hparams.num_classes)

    def transform_target(self, targets: torch.Tensor) -> torch.Tensor:
        return torch.log1p(targets.clamp(min=0)) if self.hparams.log_target else targets

    def _regression_target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.hparams.target == "bin_index":
            return batch["labels"].float()
        z = (self.transform_target(batch["targets"].double()) - self.target_mean) / self.target_std
        return z.float()

    def compute_loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        prediction = outputs.squeeze(-1).float()
        wanted = self._regression_target(batch)
        if self.hparams.loss == "huber":
            return F.huber_loss(prediction, wanted, delta=self.hparams.huber_delta)
        return F.mse_loss(prediction, wanted)

    def decode(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = outputs.squeeze(-1).double()
        if self.hparams.target == "bin_index":
            bins = torch.clamp(torch.floor(raw + 0.5), 0, self.num_bins - 1).long()
            return bins, self.bin_medians[bins]
        value = raw * self.target_std + self.target_mean
        if self.hparams.log_target:
            value = torch.expm1(value)
        return self.value_to_bin(value), value


class OrdinalRegressor(NumericTargetModule):
    """Ordinal regression over the bins: CORAL (Cao et al. 2020: one shared score and K-1 thresholds, rank
    consistent) or CORN (Shi et al. 2021: K-1 conditional binary tasks P(y > k | y > k-1)). A predicted bin
    stands for its train median.

    Args:
        method: ``coral`` or ``corn``.
        *args, **kwargs: The encoder's hyperparameters (:class:`~lightning_modules.encoder_base.EncoderModule`).
    """

    def __init__(self, *args: Any, method: Literal["coral", "corn"] = "coral", **kwargs: Any) -> None:
        if method not in ("coral", "corn"):
            raise ValueError(f"unknown ordinal method {method!r}; choose coral or corn")
        super().__init__(*args, **kwargs)
        num_classes = self.hparams.num_classes
        # CORAL: one score per example plus K-1 learned thresholds shared by all; CORN: K-1 independent outputs.
        self._build_encoder(1 if method == "coral" else num_classes - 1)
        if method == "coral":
            self.head = CoralHead(self.head, num_classes - 1)
        self._init_numeric(num_classes)

    def compute_loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch["labels"]
        thresholds = torch.arange(self.num_bins - 1, device=labels.device)
        levels = (labels[:, None] > thresholds[None, :]).float()  # levels[i, k] = 1 if y_i > k
        outputs = outputs.float()
        if self.hparams.method == "coral":
            return F.binary_cross_entropy_with_logits(outputs, levels, reduction="sum") / len(labels)
        # CORN: task k is learned on the examples with y > k-1 only (conditional probabilities).
        eligible = (labels[:, None] >= thresholds[None, :]).float()
        losses = F.binary_cross_entropy_with_logits(outputs, levels, reduction="none") * eligible
        return losses.sum() / eligible.sum().clamp(min=1.0)

    def exceed_probs(self, outputs: torch.Tensor) -> torch.Tensor:
        """``P(y > k)`` for k = 0..K-2."""
        probs = torch.sigmoid(outputs.float())
        return probs if self.hparams.method == "coral" else torch.cumprod(probs, dim=-1)

    def decode(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bins = (self.exceed_probs(outputs) > 0.5).sum(dim=-1)
        return bins, self.bin_medians[bins]

    def bin_probs(self, outputs: torch.Tensor) -> torch.Tensor:
        exceed = self.exceed_probs(outputs)
        ones = torch.ones_like(exceed[:, :1])
        upper = torch.cat([ones, exceed], dim=-1)
        lower = torch.cat([exceed, torch.zeros_like(ones)], dim=-1)
        probs = (upper - lower).clamp(min=0)
        return probs / probs.sum(dim=-1, keepdim=True).clamp(min=1e-12)


class CoralHead(nn.Module):
    """One score per example (``score_head``) minus ordered-by-learning thresholds: ``logit_k = s(x) + b_k``."""

    def __init__(self, score_head: nn.Module, num_thresholds: int) -> None:
        super().__init__()
        self.score = score_head
        self.biases = nn.Parameter(torch.linspace(1.0, -1.0, num_thresholds))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.score(pooled) + self.biases[None, :]


__all__: list[Any] = ["BinClassifier", "EncoderRegressor", "NumericTargetModule", "OrdinalRegressor"]
