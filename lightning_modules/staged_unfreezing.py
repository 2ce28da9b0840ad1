"""Staged unfreezing: train the head on a frozen backbone first, then everything (optionally layer by layer).

    trainer:
      callbacks:
        - class_path: lightning_modules.StagedUnfreezing
          init_args: {stage1_epochs: 1, stage1_lr: 5.0e-4}

Stage 1 (epochs ``0 .. stage1_epochs-1``): the backbone is frozen and only the head trains, at ``stage1_lr``
(constant, or with its own warmup). Stage 2: the backbone is unfrozen and every group follows the module's own plan
(``lr``/``head_lr``, layer-wise decay, ``warmup`` and ``schedule``), restarted over the stage-2 steps, so e.g. the
encoder warms up to 2e-5 again instead of jumping there.

Why not ``BaseFinetuning.unfreeze_and_add_param_group``: a parameter group added after the LR scheduler was built is
unknown to it (it never follows the schedule, or the scheduler fails on resume). fenlei's modules put every
parameter, frozen ones included, into a named group up front; this callback only flips ``requires_grad`` and gives
the scheduler one multiplier per group (``LambdaLR`` with a list of functions), so the plan is fixed before the first
step and survives checkpoint/resume unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BaseFinetuning
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lightning_modules.backbones import embeddings, transformer_layers
from lightning_modules.optim import Schedule, resolve_warmup, warmup_decay_lambda


class StagedUnfreezing(BaseFinetuning):
    """Two-stage fine-tuning: head only on a frozen backbone, then the whole model.

    Args:
        stage1_epochs: Epochs of stage 1 (head only). Must be below ``trainer.max_epochs``.
        stage1_lr: Learning rate of the head in stage 1 (stage 2 uses the module's ``lr`` and ``head_lr``).
        stage1_warmup: Warmup of stage 1: a fraction of its steps if < 1, else steps.
        stage1_schedule: Decay over stage 1: ``constant`` (default), ``linear`` or ``cosine``.
        gradual: Unfreeze layer by layer in stage 2: the top ``layers_per_epoch`` layers at its first epoch, the
            next ones an epoch later, and so on; the embeddings last.
        layers_per_epoch: Layers unfrozen per epoch when ``gradual``.
    """

    def __init__(
        self,
        stage1_epochs: int = 1,
        stage1_lr: float = 5e-4,
        stage1_warmup: float = 0.0,
        stage1_schedule: Schedule = "constant",
        gradual: bool = False,
        layers_per_epoch: int = 1,
    ) -> None:
        super().__init__()
        if stage1_epochs < 1:
            raise ValueError(f"stage1_epochs must be >= 1, got {stage1_epochs}")
        if layers_per_epoch < 1:
            raise ValueError(f"layers_per_epoch must be >= 1, got {layers_per_epoch}")
        self.stage1_epochs = stage1_epochs
        self.stage1_lr = stage1_lr
        self.stage1_warmup = stage1_warmup
        self.stage1_schedule = stage1_schedule
        self.gradual = gradual
        self.layers_per_epoch = layers_per_epoch
        self._kept_frozen: set[str] = set()

    # ---- freezing ----

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        backbone = pl_module.backbone
        # What the module itself froze (freeze_embeddings / freeze_layers stay frozen in stage 2). Recorded as the
        # frozen names, so a parameter the module adds after this callback's setup (embedding_rows: seen) thaws.
        self._kept_frozen = {name for name, p in backbone.named_parameters() if not p.requires_grad}
        self.freeze(backbone, train_bn=False)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        # Called at every epoch start, also after a resume: derive the state from the epoch alone.
        if epoch < self.stage1_epochs:
            return
        backbone = pl_module.backbone
        if self.gradual:
            layers = transformer_layers(backbone)
            count = (epoch - self.stage1_epochs + 1) * self.layers_per_epoch
            modules = list(layers)[::-1][:count]
            if count > len(layers):
                modules.append(embeddings(backbone))
        else:
            modules = [backbone]
        selected = {id(p) for m in modules for p in m.parameters()}
        for name, param in backbone.named_parameters():
            if id(param) in selected and name not in self._kept_frozen:
                param.requires_grad_(True)

    # Every group exists from the start, so BaseFinetuning's bookkeeping of added groups is not needed (and its
    # restore would overwrite the restored optimizer's groups with ones captured at an epoch start).
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epochs = trainer.max_epochs
        if not trainer.fast_dev_run and epochs is not None and epochs != -1 and epochs <= self.stage1_epochs:
            raise ValueError(
                f"StagedUnfreezing: stage1_epochs={self.stage1_epochs} leaves no epoch for stage 2 "
                f"(trainer.max_epochs={trainer.max_epochs})"
            )

    # ---- learning-rate plan ----

    def group_lambda(
        self, group: dict[str, Any], total_steps: int, steps_per_epoch: int, warmup: float, schedule: Schedule
    ) -> Callable[[int], float]:
        """Multiplier of ``group['lr']`` (its stage-2 peak) at each optimizer step."""
        stage1_steps = self.stage1_epochs * steps_per_epoch
        stage2_steps = max(1, total_steps - stage1_steps)
        stage1 = warmup_decay_lambda(resolve_warmup(self.stage1_warmup, stage1_steps), stage1_steps, self.stage1_schedule)
        stage2 = warmup_decay_lambda(resolve_warmup(warmup, stage2_steps), stage2_steps, schedule)
        is_head = group["name"].split(".")[0] == "head"
        ratio = self.stage1_lr / group["lr"] if group["lr"] > 0 else 0.0

        def factor(step: int) -> float:
            if step < stage1_steps:
                return ratio * stage1(step) if is_head else 0.0
            return stage2(step - stage1_steps)

        return factor

    def build_scheduler(
        self, optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup: float, schedule: Schedule
    ) -> LambdaLR:
        lambdas = [self.group_lambda(g, total_steps, steps_per_epoch, warmup, schedule) for g in optimizer.param_groups]
        return LambdaLR(optimizer, lambdas)

