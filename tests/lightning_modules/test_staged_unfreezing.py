"""Staged unfreezing: the learning rate of every parameter group follows the two-stage plan (checked from the values
LearningRateMonitor logged), the backbone does not move in stage 1 and does in stage 2, gradual unfreezing goes
top-down, and permanently frozen parts stay frozen."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger

from datamodules import TextClassificationDataModule
from lightning_modules import EncoderClassifier, StagedUnfreezing
from lightning_modules.optim import warmup_decay_lambda

STEPS_PER_EPOCH = 8  # tiny_data: 64 train rows, batch 8


class Recorder(pl.Callback):
    """Backbone weights and trainable flags at every epoch start (after StagedUnfreezing acted)."""

    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []
        self.trainable: list[dict[str, bool]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weights.append(pl_module.backbone.encoder.layer[0].attention.self.query.weight.detach().clone())
        self.trainable.append({n: p.requires_grad for n, p in pl_module.backbone.named_parameters()})

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weights.append(pl_module.backbone.encoder.layer[0].attention.self.query.weight.detach().clone())


def run(tiny_model: Path, tiny_data: Path, tmp_path: Path, staged: StagedUnfreezing, epochs: int, **model_kwargs):
    pl.seed_everything(0)
    dm = TextClassificationDataModule(tokenizer=str(tiny_model), data_dir=str(tiny_data), batch_size=8, max_length=32)
    model = EncoderClassifier(str(tiny_model), num_classes=dm.num_classes, **model_kwargs)
    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=CSVLogger(tmp_path, name="", version=""), log_every_n_steps=1,
        callbacks=[staged, recorder, LearningRateMonitor(logging_interval="step")], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, dm)
    rows = [r for r in csv.DictReader((tmp_path / "metrics.csv").open()) if r.get("lr-AdamW/head")]
    return recorder, {int(r["step"]): r for r in rows}


def test_lr_plan_follows_both_stages(tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    staged = StagedUnfreezing(stage1_epochs=1, stage1_lr=5e-3)
    recorder, rows = run(tiny_model, tiny_data, tmp_path, staged, epochs=3,
                         lr=1e-3, head_lr=2e-3, warmup=0.25, schedule="linear", layerwise_lr_decay=0.5)
    assert sorted(rows) == list(range(3 * STEPS_PER_EPOCH))
    stage2 = warmup_decay_lambda(4, 2 * STEPS_PER_EPOCH, "linear")  # 25% of the 16 stage-2 steps warm up
    for step, row in rows.items():
        if step < STEPS_PER_EPOCH:  # stage 1: head at stage1_lr, constant; the backbone at zero
            expected = {"head": 5e-3, "layer1": 0.0, "layer0": 0.0, "embeddings": 0.0}
        else:  # stage 2: the module's own peaks (layer-wise decay), warmup restarted, then linear decay
            f = stage2(step - STEPS_PER_EPOCH)
            expected = {"head": 2e-3 * f, "layer1": 1e-3 * f, "layer0": 5e-4 * f, "embeddings": 2.5e-4 * f}
        for group, value in expected.items():
            assert float(row[f"lr-AdamW/{group}"]) == pytest.approx(value, rel=1e-6, abs=1e-12), (step, group)
            assert float(row[f"lr-AdamW/{group}.no_decay"]) == pytest.approx(value, rel=1e-6, abs=1e-12)
    # The backbone is frozen through stage 1 and trains in stage 2.
    assert torch.equal(recorder.weights[0], recorder.weights[1])
    assert not torch.equal(recorder.weights[1], recorder.weights[-1])
    assert not any(recorder.trainable[0].values()) and all(recorder.trainable[1].values())


def test_gradual_unfreezing_top_down_and_respects_permanent_freezing(tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    staged = StagedUnfreezing(stage1_epochs=1, stage1_lr=1e-3, gradual=True, layers_per_epoch=1)
    recorder, _ = run(tiny_model, tiny_data, tmp_path, staged, epochs=4, lr=1e-3, freeze_embeddings=True)

    def trainable(epoch: int, prefix: str) -> bool:
        flags = [v for n, v in recorder.trainable[epoch].items() if n.startswith(prefix)]
        assert flags, prefix
        return all(flags)

    assert [trainable(e, "encoder.layer.1.") for e in range(4)] == [False, True, True, True]
    assert [trainable(e, "encoder.layer.0.") for e in range(4)] == [False, False, True, True]
    # freeze_embeddings=True on the module: stays frozen even after every layer is unfrozen.
    assert not any(v for n, v in recorder.trainable[3].items() if n.startswith("embeddings."))


def test_stage1_must_leave_epochs_for_stage2(tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="leaves no epoch for stage 2"):
        run(tiny_model, tiny_data, tmp_path, StagedUnfreezing(stage1_epochs=2), epochs=2)
