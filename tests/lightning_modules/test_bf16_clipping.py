"""bf16 autocast with the fused AdamW and gradient clipping: the recipes' combination trains and clips.

Lightning's MixedPrecision refuses to clip with an optimizer that can unscale gradients itself, scaler or not, so
every bf16-mixed config with gradient_clip_val crashed at the first step on CPUs with native bf16."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from datamodules import TextClassificationDataModule
from lightning_modules import EncoderClassifier


def _grad_norm(module: torch.nn.Module) -> float | None:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else None


class _RecordNorm(pl.Callback):
    """The gradient norm each update used: the update leaves the clipped gradients in place until the next step
    zeroes them, so they are read then (and after fit for the last step)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_zero_grad(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        norm = _grad_norm(pl_module)
        if norm is not None:
            self.norms.append(norm)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_bf16_mixed_fused_adamw_clips(tiny_model: Path, tiny_data: Path, tmp_path: Path, algorithm: str) -> None:
    pl.seed_everything(3)
    dm = TextClassificationDataModule(tokenizer=str(tiny_model), data_dir=str(tiny_data), batch_size=8, max_length=32)
    model = EncoderClassifier(str(tiny_model), num_classes=dm.num_classes, lr=1e-2, fused_adamw=True)
    record = _RecordNorm()
    clip = 1e-3  # far below the tiny model's gradient norm, so clipping visibly acts
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", precision="bf16-mixed", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, gradient_clip_val=clip,
                         gradient_clip_algorithm=algorithm, callbacks=[record], default_root_dir=str(tmp_path))
    trainer.fit(model, dm)
    record.norms.append(_grad_norm(model))
    assert trainer.global_step == 3 and len(record.norms) == 3
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    bound = clip * (1 + 1e-3) if algorithm == "norm" else clip * n_params**0.5
    assert all(0 < norm <= bound for norm in record.norms), record.norms
