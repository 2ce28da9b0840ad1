"""EncoderClassifier: pooling, heads, freezing, parameter groups and the learning-rate plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_modules import EncoderClassifier
from lightning_modules.encoder_classifier import masked_mean
from lightning_modules.optim import warmup_decay_lambda
from losses import FocalLoss


def test_masked_mean_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(masked_mean(hidden, mask), torch.tensor([[2.0, 2.0]]))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_forward_shapes_and_padding_invariance(tiny_model: Path, pooling: str, head: str) -> None:
    model = EncoderClassifier(str(tiny_model), num_classes=3, pooling=pooling, head=head, head_hidden_size=16).eval()
    ids = torch.tensor([[2, 10, 11, 3]])
    padded = torch.tensor([[2, 10, 11, 3, 0, 0]])
    a = model(ids, torch.ones_like(ids))
    b = model(padded, (padded != 0).long())
    assert a.shape == (1, 3)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    if head == "mlp":
        kinds = [type(m).__name__ for m in model.head]
        assert kinds == ["Linear", "GELU", "Dropout", "Linear"] and model.head[0].out_features == 16


def test_backbone_is_in_train_mode_for_dropout(tiny_model: Path) -> None:
    model = EncoderClassifier(str(tiny_model), num_classes=3)
    assert all(m.training for m in model.backbone.modules())


def test_freezing_embeddings_and_bottom_layers(tiny_model: Path) -> None:
    model = EncoderClassifier(str(tiny_model), num_classes=3, freeze_layers=1)
    assert not any(p.requires_grad for p in model.backbone.embeddings.parameters())
    assert not any(p.requires_grad for p in model.backbone.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in model.backbone.encoder.layer[1].parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    with pytest.raises(ValueError, match="freeze_layers=5"):
        EncoderClassifier(str(tiny_model), num_classes=3, freeze_layers=5)


class _FakeTrainer:
    estimated_stepping_batches = 100


def _optimizer(model: EncoderClassifier):
    model._trainer = _FakeTrainer()  # configure_optimizers only reads estimated_stepping_batches
    config = model.configure_optimizers()
    return config["optimizer"], config["lr_scheduler"]["scheduler"]


def test_param_groups_cover_every_parameter_once_with_layerwise_decay(tiny_model: Path) -> None:
    model = EncoderClassifier(str(tiny_model), num_classes=3, lr=1e-3, head_lr=1e-2, layerwise_lr_decay=0.5,
                              freeze_layers=1, warmup=10)
    optimizer, _ = _optimizer(model)
    seen = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == len(list(model.parameters()))  # frozen ones included: unfreezing needs no new group
    lrs = {g["name"]: g["initial_lr"] for g in optimizer.param_groups}
    assert lrs["head"] == pytest.approx(1e-2)
    assert lrs["layer1"] == pytest.approx(1e-3)  # top layer of two
    assert lrs["layer0"] == pytest.approx(5e-4)
    assert lrs["embeddings"] == pytest.approx(2.5e-4)
    for group in optimizer.param_groups:
        if group["name"].endswith("no_decay"):
            assert group["weight_decay"] == 0.0
            assert all(p.ndim == 1 for p in group["params"])


def test_lr_plan_warmup_then_linear_decay(tiny_model: Path) -> None:
    model = EncoderClassifier(str(tiny_model), num_classes=3, lr=1e-3, warmup=0.1, schedule="linear")
    optimizer, scheduler = _optimizer(model)
    seen = []
    for _ in range(100):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(1e-4)  # step 1 of 10 warmup steps
    assert seen[9] == pytest.approx(1e-3)  # peak at the end of warmup
    assert seen[55] == pytest.approx(1e-3 * (1 - 45 / 90))  # 45 of 90 decay steps done
    assert max(seen) == pytest.approx(1e-3) and seen[-1] < 2e-5


def test_cosine_schedule_shape() -> None:
    factor = warmup_decay_lambda(0, 100, "cosine")
    assert factor(0) == pytest.approx(1.0)
    assert factor(50) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-9)


def test_class_counts_feed_loss_weights(tiny_model: Path) -> None:
    loss = FocalLoss(gamma=2.0, class_weights="balanced")
    model = EncoderClassifier(str(tiny_model), num_classes=3, class_counts=[10, 20, 70], loss=loss)
    torch.testing.assert_close(model.loss_fn.weight, torch.tensor([100 / 30, 100 / 60, 100 / 210]))


def test_label_names_must_match_num_classes(tiny_model: Path) -> None:
    with pytest.raises(ValueError, match="2 label names"):
        EncoderClassifier(str(tiny_model), num_classes=3, label_names=["a", "b"])
