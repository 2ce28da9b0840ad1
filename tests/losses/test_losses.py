"""Losses against reference formulas: focal(gamma=0) == CE, hand-written focal loss, class-weight schemes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from losses import CrossEntropyLoss, FocalLoss, class_weights_from_counts

NUM_CLASSES = 5
COUNTS = [40, 10, 3, 25, 7]


def _batch(seed: int, n: int = 32, num_classes: int = NUM_CLASSES, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (N, C) and targets (N,) that cover several classes."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, num_classes, generator=generator) * scale
    targets = torch.randint(0, num_classes, (n,), generator=generator)
    return logits, targets


def _focal_reference(logits: torch.Tensor, targets: torch.Tensor, gamma: float, alpha: list[float] | None = None) -> torch.Tensor:
    """mean_i alpha_{y_i} * -(1 - p_{i,y_i})^gamma * log p_{i,y_i}, computed in float64 without shortcuts."""
    probs = torch.softmax(logits.double(), dim=-1)
    p_y = probs[torch.arange(len(targets)), targets]
    terms = -((1.0 - p_y) ** gamma) * torch.log(p_y)
    if alpha is not None:
        terms = terms * torch.tensor(alpha, dtype=torch.float64)[targets]
    return terms.sum() / len(targets)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("label_smoothing", "class_weights"),
    [(0.0, "none"), (0.1, "none"), (0.0, "balanced"), (0.1, "balanced"), (0.1, "inverse_log")],
)
def test_focal_gamma0_equals_cross_entropy(seed: int, label_smoothing: float, class_weights: str) -> None:
    """With gamma=0 the focal loss reduces to cross-entropy for every smoothing/weighting combination."""
    logits, targets = _batch(seed)
    ce = CrossEntropyLoss(label_smoothing=label_smoothing, class_weights=class_weights)
    focal = FocalLoss(gamma=0.0, label_smoothing=label_smoothing, class_weights=class_weights)
    ce.set_class_counts(COUNTS)
    focal.set_class_counts(COUNTS)
    torch.testing.assert_close(focal(logits, targets), ce(logits, targets), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_focal_gamma0_equals_cross_entropy_explicit_weights(seed: int) -> None:
    """An explicit weight list (no set_class_counts call) also gives identical CE and focal(gamma=0)."""
    logits, targets = _batch(seed)
    weights = [0.5, 2.0, 1.0, 3.0, 0.25]
    ce = CrossEntropyLoss(label_smoothing=0.1, class_weights=weights)
    focal = FocalLoss(gamma=0.0, label_smoothing=0.1, class_weights=weights)
    expected = F.cross_entropy(logits, targets, weight=torch.tensor(weights), label_smoothing=0.1)
    torch.testing.assert_close(ce(logits, targets), expected)
    torch.testing.assert_close(focal(logits, targets), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_entropy_matches_torch_with_smoothing(seed: int) -> None:
    """CrossEntropyLoss(label_smoothing=0.1) is torch's cross_entropy with the same smoothing (and differs from 0)."""
    logits, targets = _batch(seed)
    loss = CrossEntropyLoss(label_smoothing=0.1)(logits, targets)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets, label_smoothing=0.1))
    assert not torch.isclose(loss, F.cross_entropy(logits, targets))


def test_cross_entropy_balanced_weights_match_torch() -> None:
    """class_weights='balanced' feeds sklearn-style weights into torch's weighted cross-entropy."""
    logits, targets = _batch(3)
    loss = CrossEntropyLoss(class_weights="balanced")
    loss.set_class_counts(COUNTS)
    n = sum(COUNTS)
    weight = torch.tensor([n / (len(COUNTS) * c) for c in COUNTS], dtype=torch.float32)
    torch.testing.assert_close(loss(logits, targets), F.cross_entropy(logits, targets, weight=weight))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_focal_gamma2_matches_reference(seed: int) -> None:
    """gamma=2, no smoothing, no weights: mean of -(1-p_y)^2 log p_y."""
    logits, targets = _batch(seed)
    loss = FocalLoss(gamma=2.0)(logits, targets)
    torch.testing.assert_close(loss.double(), _focal_reference(logits, targets, gamma=2.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0])
def test_focal_other_gammas_match_reference(gamma: float) -> None:
    """Non-integer and other gammas follow the same formula."""
    logits, targets = _batch(7)
    loss = FocalLoss(gamma=gamma)(logits, targets)
    torch.testing.assert_close(loss.double(), _focal_reference(logits, targets, gamma=gamma), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_focal_alpha_list_matches_reference(seed: int) -> None:
    """A per-class alpha multiplies each example's term by alpha_y; the loss is still divided by N."""
    logits, targets = _batch(seed)
    alpha = [0.25, 1.0, 2.0, 0.5, 4.0]
    loss = FocalLoss(gamma=2.0, alpha=alpha)(logits, targets)
    reference = _focal_reference(logits, targets, gamma=2.0, alpha=alpha)
    torch.testing.assert_close(loss.double(), reference, rtol=1e-5, atol=1e-6)
    # Not normalised by the alpha sum: differs from the weighted mean.
    weighted_mean = reference * len(targets) / torch.tensor(alpha, dtype=torch.float64)[targets].sum()
    assert not torch.isclose(loss.double(), weighted_mean, rtol=1e-3)


def test_focal_alpha_list_wrong_length_raises() -> None:
    logits, targets = _batch(0)
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(gamma=2.0, alpha=[1.0, 2.0])(logits, targets)


@pytest.mark.parametrize("alpha", [0.25, 3.0])
def test_focal_scalar_alpha_scales_loss(alpha: float) -> None:
    """A scalar alpha multiplies the whole loss."""
    logits, targets = _batch(4)
    base = FocalLoss(gamma=2.0)(logits, targets)
    scaled = FocalLoss(gamma=2.0, alpha=alpha)(logits, targets)
    torch.testing.assert_close(scaled, base * alpha)


def test_focal_downweights_easy_examples() -> None:
    """A confidently correct example costs far less under focal loss than under CE; a wrong one barely less."""
    easy = torch.tensor([[6.0, 0.0, 0.0]])
    hard = torch.tensor([[0.0, 3.0, 0.0]])
    target = torch.tensor([0])
    ce, focal = CrossEntropyLoss(), FocalLoss(gamma=2.0)
    ce_easy, focal_easy = ce(easy, target), focal(easy, target)
    ce_hard, focal_hard = ce(hard, target), focal(hard, target)
    assert focal_easy > 0
    assert focal_easy < 0.01 * ce_easy  # (1 - p)^2 with p ~ 0.995
    assert focal_hard > 0.8 * ce_hard  # p ~ 0.045: almost no down-weighting
    assert focal_easy / ce_easy < focal_hard / ce_hard


@pytest.mark.parametrize("gamma", [0.25, 0.5, 2.0])
def test_focal_gradient_finite_when_probability_rounds_to_one(gamma: float) -> None:
    """A logit margin of 20 makes p_y exactly 1.0 in float32; (1 - p)^gamma with gamma < 1 must not give NaN."""
    logits = torch.tensor([[20.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 0])
    loss = FocalLoss(gamma=gamma)(logits, targets)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    torch.testing.assert_close(loss.double(), _focal_reference(logits.detach(), targets, gamma=gamma), rtol=1e-5, atol=1e-6)


# ---- class_weights_from_counts ----


def test_balanced_weights_match_sklearn() -> None:
    """'balanced' is n / (C * count_c), exactly sklearn's compute_class_weight('balanced')."""
    labels = np.concatenate([np.full(c, i) for i, c in enumerate(COUNTS)])
    expected = compute_class_weight("balanced", classes=np.arange(len(COUNTS)), y=labels)
    weights = class_weights_from_counts(COUNTS, "balanced")
    assert weights is not None and weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float32))
    n = sum(COUNTS)
    torch.testing.assert_close(weights, torch.tensor([n / (len(COUNTS) * c) for c in COUNTS], dtype=torch.float32))


def test_balanced_weights_zero_count_class_gets_zero() -> None:
    """A class absent from training gets weight 0 (not inf/NaN); the others keep n / (C * count)."""
    counts = [6, 0, 2]
    weights = class_weights_from_counts(counts, "balanced")
    assert weights is not None
    torch.testing.assert_close(weights, torch.tensor([8 / 18, 0.0, 8 / 6]))
    assert torch.isfinite(weights).all()


def test_inverse_log_weights_exact() -> None:
    """'inverse_log' is 1 / log(1.02 + count / n)."""
    weights = class_weights_from_counts(COUNTS, "inverse_log")
    n = sum(COUNTS)
    expected = torch.tensor([1.0 / math.log(1.02 + c / n) for c in COUNTS], dtype=torch.float32)
    assert weights is not None
    torch.testing.assert_close(weights, expected)
    # Rarer classes weigh more.
    order = sorted(range(len(COUNTS)), key=lambda i: COUNTS[i])
    assert all(weights[a] > weights[b] for a, b in zip(order, order[1:], strict=False))


def test_explicit_weights_pass_through() -> None:
    weights = class_weights_from_counts(COUNTS, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert weights is not None
    torch.testing.assert_close(weights, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))


def test_none_scheme_gives_no_weights() -> None:
    assert class_weights_from_counts(COUNTS, "none") is None


def test_explicit_weights_wrong_length_raises() -> None:
    with pytest.raises(ValueError, match="3 values but there are 5 classes"):
        class_weights_from_counts(COUNTS, [1.0, 2.0, 3.0])


def test_unknown_scheme_raises() -> None:
    with pytest.raises(ValueError, match="unknown class weighting"):
        class_weights_from_counts(COUNTS, "sqrt_inverse")  # type: ignore[arg-type]


@pytest.mark.parametrize("loss_class", [CrossEntropyLoss, FocalLoss])
def test_weights_needed_before_set_class_counts(loss_class: type) -> None:
    """class_weights='balanced' without counts fails loudly instead of silently training unweighted."""
    logits, targets = _batch(0)
    loss = loss_class(class_weights="balanced")
    with pytest.raises(RuntimeError, match=r"set_class_counts\(\)"):
        loss(logits, targets)
    loss.set_class_counts(COUNTS)
    assert torch.isfinite(loss(logits, targets))


@pytest.mark.parametrize("loss_class", [CrossEntropyLoss, FocalLoss])
def test_weight_count_must_match_num_classes(loss_class: type) -> None:
    logits, targets = _batch(0)
    loss = loss_class(class_weights="balanced")
    loss.set_class_counts([5, 5, 5])
    with pytest.raises(ValueError, match="3 class weights for 5 classes"):
        loss(logits, targets)


@pytest.mark.parametrize(
    "loss",
    [CrossEntropyLoss(), CrossEntropyLoss(label_smoothing=0.1), FocalLoss(gamma=2.0), FocalLoss(gamma=2.0, label_smoothing=0.1),
     FocalLoss(gamma=0.5)],
    ids=["ce", "ce-smooth", "focal", "focal-smooth", "focal-gamma0.5"],
)
def test_gradients_finite_for_extreme_logits(loss: torch.nn.Module) -> None:
    """Logits of +-1e4 (right and wrong, confident) give a finite loss and finite gradients."""
    logits = torch.tensor(
        [[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [1e4, 1e4, -1e4], [0.0, 0.0, 0.0]], requires_grad=True
    )
    targets = torch.tensor([0, 0, 2, 1])
    value = loss(logits, targets)
    value.backward()
    assert torch.isfinite(value)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_logit_adjustment_is_cross_entropy_on_shifted_logits(seed: int) -> None:
    """tau * log(training prior) is added to the logits the loss sees (Menon et al. 2021); focal(gamma=0) agrees."""
    logits, targets = _batch(seed)
    prior = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    expected = F.cross_entropy(logits + 0.7 * torch.log(prior).float(), targets, label_smoothing=0.1)
    for loss in (CrossEntropyLoss(label_smoothing=0.1, logit_adjustment=0.7),
                 FocalLoss(gamma=0.0, label_smoothing=0.1, logit_adjustment=0.7)):
        loss.set_class_counts(COUNTS)
        torch.testing.assert_close(loss(logits, targets), expected, rtol=1e-5, atol=1e-6)
    plain = CrossEntropyLoss(label_smoothing=0.1)
    plain.set_class_counts(COUNTS)
    assert not torch.isclose(plain(logits, targets), expected)


def test_logit_adjustment_favours_rare_classes_and_needs_counts() -> None:
    """At equal logits a rare target costs more under adjustment (its log prior lowers the logit the loss sees), so
    training raises rare classes' logits further than plain CE; counts are required; an unseen class stays finite."""
    counts = [90, 10]
    logits = torch.zeros(1, 2)
    adjusted = CrossEntropyLoss(logit_adjustment=1.0)
    adjusted.set_class_counts(counts)
    rare, common = adjusted(logits, torch.tensor([1])), adjusted(logits, torch.tensor([0]))
    assert rare > common  # at equal logits the rare target costs more: its logit must rise further to fit
    with pytest.raises(RuntimeError, match="needs class counts"):
        CrossEntropyLoss(logit_adjustment=1.0)(logits, torch.tensor([0]))
    with pytest.raises(ValueError, match="logit_adjustment"):
        CrossEntropyLoss(logit_adjustment=float("nan"))
    zero = CrossEntropyLoss(logit_adjustment=1.0)
    zero.set_class_counts([5, 0])  # a class with no training example: finite, not -inf
    assert torch.isfinite(zero(logits, torch.tensor([1])))
