"""Cross-entropy and focal loss with label smoothing, class weights and logit adjustment.

Both losses share one normalisation so that they agree where they should: the loss is the sum of per-example
losses divided by the sum of the class weights of the targets (all ones without weights), which is exactly
``torch.nn.functional.cross_entropy(weight=..., label_smoothing=...)``. Hence ``FocalLoss(gamma=0)`` equals
``CrossEntropyLoss`` for every setting of smoothing and weights (tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

ClassWeighting = Union[Literal["none", "balanced", "inverse_log"], list[float]]


def class_weights_from_counts(counts: Sequence[int], scheme: ClassWeighting) -> Optional[torch.Tensor]:
    """Per-class weights from training class counts.

    - ``none``: no weights.
    - ``balanced``: ``n_samples / (n_classes * count_c)`` (scikit-learn's "balanced"); classes with no
      training example get weight 0, since they can never be a target.
    - ``inverse_log``: ``1 / log(1.02 + freq_c)`` with ``freq_c = count_c / n_samples`` (the smoothed inverse
      log frequency of ENet / many imbalanced-text papers); bounded by ``1 / log(1.02) ~ 50``.
    - a list: used as given (one weight per class).
    """
    if isinstance(scheme, (list, tuple)):
        if len(scheme) != len(counts):
            raise ValueError(f"class_weights has {len(scheme)} values but there are {len(counts)} classes")
        return torch.tensor(scheme, dtype=torch.float32)
    if scheme == "none":
        return None
    counts_t = torch.tensor(list(counts), dtype=torch.float64)
    total = counts_t.sum()
    if total <= 0:
        raise ValueError("class weights need at least one training example")
    if scheme == "balanced":
        weights = torch.where(counts_t > 0, total / (len(counts_t) * counts_t.clamp(min=1)), torch.zeros_like(counts_t))
    elif scheme == "inverse_log":
        weights = 1.0 / torch.log(1.02 + counts_t / total)
    else:
        raise ValueError(f"unknown class weighting {scheme!r}; choose none, balanced, inverse_log or a list")
    return weights.float()


class ClassificationLoss(nn.Module):
    """Base class: label smoothing and class weights; subclasses define the per-example loss.

    Args:
        label_smoothing: Mass moved from the target to a uniform distribution over all classes (0 = off).
        class_weights: ``none``, ``balanced``, ``inverse_log`` (computed from the training class counts that the
            model receives from the DataModule), or an explicit list with one weight per class.
        logit_adjustment: ``tau`` of the logit-adjusted loss (Menon et al. 2021, "Long-tail learning via logit
            adjustment"): the loss sees ``logits + tau * log(prior)``, the prior being the training class
            frequencies, while predictions use the plain logits, so the model learns the classifier for a test set
            with balanced classes (tau = 1 is the paper's choice; 0 = off). Unlike class weights it moves the
            decision boundary without re-weighting the gradient of any example.
    """

    def __init__(self, label_smoothing: float = 0.0, class_weights: ClassWeighting = "none",
                 logit_adjustment: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not (math.isfinite(logit_adjustment) and logit_adjustment >= 0):
            raise ValueError(f"logit_adjustment must be a finite number >= 0, got {logit_adjustment}")
        self.label_smoothing = label_smoothing
        self.class_weighting = class_weights
        self.logit_adjustment = float(logit_adjustment)
        self.register_buffer("weight", None, persistent=False)
        self.register_buffer("log_prior", None, persistent=False)

    def set_class_counts(self, counts: Sequence[int]) -> None:
        """Compute the class weights (a no-op for ``none``) and the log prior from training class counts."""
        weights = class_weights_from_counts(counts, self.class_weighting)
        self.weight = None if weights is None else weights.to(self._device())
        counts_t = torch.tensor(list(counts), dtype=torch.float64)
        # A class with no training example gets half an example's prior rather than log(0) = -inf.
        self.log_prior = torch.log(counts_t.clamp(min=0.5) / counts_t.clamp(min=0.5).sum()).float().to(self._device())

    def adjusted(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits the loss sees: float32, plus ``tau * log(prior)`` under logit adjustment."""
        logits = logits.float()
        if not self.logit_adjustment:
            return logits
        if self.log_prior is None:
            raise RuntimeError("logit_adjustment needs class counts: call set_class_counts() first")
        if self.log_prior.numel() != logits.shape[-1]:
            raise ValueError(f"{self.log_prior.numel()} class priors for {logits.shape[-1]} classes")
        return logits + self.logit_adjustment * self.log_prior.to(logits.device)

    def _device(self) -> torch.device:
        return self.weight.device if self.weight is not None else torch.device("cpu")

    def _check_weights(self, num_classes: int) -> None:
        if self.class_weighting not in ("none", None) and self.weight is None:
            if isinstance(self.class_weighting, (list, tuple)):
                self.set_class_counts([1] * len(self.class_weighting))
            else:
                raise RuntimeError(
                    f"class_weights={self.class_weighting!r} needs class counts: call set_class_counts() first"
                )
        if self.weight is not None and self.weight.numel() != num_classes:
            raise ValueError(f"{self.weight.numel()} class weights for {num_classes} classes")

    def smoothed_targets(self, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
        """One-hot targets with label smoothing, as torch does: ``(1 - eps) * onehot + eps / C``."""
        onehot = F.one_hot(targets, num_classes).to(torch.float32)
        eps = self.label_smoothing
        return onehot * (1.0 - eps) + eps / num_classes

    def normaliser(self, targets: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return torch.tensor(float(targets.numel()), device=targets.device)
        return self.weight[targets].sum()


class CrossEntropyLoss(ClassificationLoss):
    """Cross-entropy with optional label smoothing and class weights (torch's implementation)."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check_weights(logits.shape[-1])
        weight = None if self.weight is None else self.weight.to(logits.device, torch.float32)
        return F.cross_entropy(self.adjusted(logits), targets, weight=weight, label_smoothing=self.label_smoothing)


class FocalLoss(ClassificationLoss):
    """Multiclass focal loss (Lin et al. 2017), optionally with label smoothing and class weights.

    Per example: ``alpha * sum_c q_c w_c (1 - p_c)^gamma (-log p_c)`` where ``q`` is the (smoothed) target
    distribution, ``p`` the softmax and ``w`` the class weights; summed and divided by the summed target weights.

    Args:
        gamma: Focusing parameter; 0 gives cross-entropy.
        alpha: A scalar scales the loss; a list gives one factor per class (multiplies the class weights but,
            unlike them, does not enter the normalisation, as in RetinaNet).
        label_smoothing: See :class:`ClassificationLoss`.
        class_weights: See :class:`ClassificationLoss`.
        logit_adjustment: See :class:`ClassificationLoss`.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: Optional[Union[float, list[float]]] = None,
        label_smoothing: float = 0.0,
        class_weights: ClassWeighting = "none",
        logit_adjustment: float = 0.0,
    ) -> None:
        super().__init__(label_smoothing=label_smoothing, class_weights=class_weights,
                         logit_adjustment=logit_adjustment)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[-1]
        self._check_weights(num_classes)
        log_p = F.log_softmax(self.adjusted(logits), dim=-1)
        # (1 - p)^gamma computed as -expm1(log p) keeps precision when p is close to 1. The clamp at the smallest
        # normal float keeps the gradient of x^gamma (infinite at x = 0 for gamma < 1) from turning into NaN when
        # p rounds to exactly 1 (a logit margin above ~17 in float32).
        base = (-torch.expm1(log_p)).clamp(min=torch.finfo(log_p.dtype).tiny)
        modulator = base.pow(self.gamma) if self.gamma != 0 else 1.0
        per_class = -log_p * modulator * self.smoothed_targets(targets, num_classes)
        if self.weight is not None:
            per_class = per_class * self.weight.to(per_class.device)
        if isinstance(self.alpha, (list, tuple)):
            if len(self.alpha) != num_classes:
                raise ValueError(f"alpha has {len(self.alpha)} values for {num_classes} classes")
            per_class = per_class * torch.tensor(self.alpha, device=per_class.device, dtype=per_class.dtype)
        loss = per_class.sum() / self.normaliser(targets)
        if isinstance(self.alpha, (int, float)) and not math.isclose(self.alpha, 1.0):
            loss = loss * self.alpha
        return loss


def with_class_counts(loss: Optional[ClassificationLoss], class_counts: Optional[Sequence[int]]) -> ClassificationLoss:
    """``loss`` (cross-entropy when None) with its class weights computed from the training class counts, when the
    DataModule gave them."""
    loss = loss if loss is not None else CrossEntropyLoss()
    if class_counts is not None:
        loss.set_class_counts(class_counts)
    return loss
