"""What every encoder-based module shares: backbone loading, pooling, head, freezing and the optimizer plan.

Subclasses (``EncoderClassifier``, the numeric-target modules) call ``save_hyperparameters()`` in their own
``__init__`` and then ``_build_encoder(out_features)``; the hyperparameter names used here (``pretrained``,
``pooling``, ``head``, ``lr`` ...) are therefore the same in every module and every YAML file.

The learning-rate plan: one parameter group per block (head, each transformer layer, embeddings), built up front
for all parameters, frozen ones included, so unfreezing only flips ``requires_grad``. A ``StagedUnfreezing``
callback in the trainer replaces the single warmup/decay multiplier by one multiplier per group (see
``lightning_modules.staged_unfreezing``).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torch import nn

from fenlei.pretrained import resolve_pretrained
from lightning_modules.backbones import embeddings, set_trainable, transformer_layers
from lightning_modules.optim import build_scheduler, param_groups, resolve_warmup


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def build_head(hidden_size: int, num_outputs: int, head: str, head_hidden_size: Optional[int], dropout: float) -> nn.Module:
    if head == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_outputs))
    if head == "mlp":
        width = head_hidden_size or hidden_size
        return nn.Sequential(nn.Linear(hidden_size, width), nn.GELU(), nn.Dropout(dropout), nn.Linear(width, num_outputs))
    raise ValueError(f"unknown head {head!r}; choose linear or mlp")


class EncoderModule(pl.LightningModule):
    """Backbone + pooling + head, freezing and parameter groups; subclasses add the task (loss, metrics)."""

    backbone: nn.Module
    head: nn.Module

    def _build_encoder(self, num_outputs: int, head: Optional[nn.Module] = None) -> None:
        from transformers import AutoModel

        hp = self.hparams
        self.backbone = AutoModel.from_pretrained(resolve_pretrained(hp.pretrained))
        if getattr(self.backbone, "pooler", None) is not None:
            # The BERT pooler is unused here; dropping it saves compute and avoids DDP's unused-parameter error.
            self.backbone.pooler = None
        vocab_size = hp.get("vocab_size")
        if vocab_size and vocab_size != self.backbone.get_input_embeddings().num_embeddings:
            # Feature markers added special tokens to the tokenizer (linked from the DataModule).
            self.backbone.resize_token_embeddings(vocab_size)
        self.backbone.train()  # from_pretrained returns eval mode, and Lightning 2.6 keeps module modes as found
        hidden_size = self.backbone.config.hidden_size
        self.head = head if head is not None else build_head(
            hidden_size, num_outputs, hp.head, hp.get("head_hidden_size"), hp.dropout
        )
        self._apply_freezing()

    def _apply_freezing(self) -> None:
        layers = transformer_layers(self.backbone)
        n = self.hparams.freeze_layers
        if not 0 <= n <= len(layers):
            raise ValueError(f"freeze_layers={n} but the encoder has {len(layers)} layers")
        if self.hparams.freeze_embeddings or n > 0:
            set_trainable(embeddings(self.backbone), False)
        for layer in layers[:n]:
            set_trainable(layer, False)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled sentence representation, ``(batch, hidden)``."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.hparams.pooling == "cls":
            return hidden[:, 0]
        return masked_mean(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(input_ids, attention_mask))

    # ---- optimisation ----

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        layers = transformer_layers(self.backbone)
        depth = len(layers)
        blocks: list[tuple[str, nn.Module, float]] = [("head", self.head, hp.head_lr or hp.lr)]
        blocks += [(f"layer{i}", layer, hp.lr * hp.layerwise_lr_decay ** (depth - 1 - i)) for i, layer in enumerate(layers)]
        blocks.append(("embeddings", embeddings(self.backbone), hp.lr * hp.layerwise_lr_decay**depth))
        covered = {id(p) for _, module, _ in blocks for p in module.parameters()}
        covered |= {id(p) for p in self.head.parameters()}
        rest = _ParamBag([(n, p) for n, p in self.named_parameters() if id(p) not in covered])
        if len(list(rest.parameters())):
            blocks.append(("backbone_other", rest, hp.lr))
        groups = param_groups(blocks, hp.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, fused=hp.fused_adamw or None)
        total = int(self.trainer.estimated_stepping_batches)
        staged = self._staged_unfreezing()
        if staged is not None:
            steps_per_epoch = math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches)
            scheduler = staged.build_scheduler(optimizer, total, steps_per_epoch, hp.warmup, hp.schedule)
        else:
            scheduler = build_scheduler(optimizer, resolve_warmup(hp.warmup, total), total, hp.schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _staged_unfreezing(self) -> Any:
        from lightning_modules.staged_unfreezing import StagedUnfreezing

        found = [cb for cb in getattr(self.trainer, "callbacks", []) if isinstance(cb, StagedUnfreezing)]
        if len(found) > 1:
            raise ValueError("more than one StagedUnfreezing callback")
        return found[0] if found else None


class _ParamBag(nn.Module):
    """Holds leftover named parameters (e.g. a final LayerNorm) so they get an optimizer group too."""

    def __init__(self, named: list[tuple[str, nn.Parameter]]) -> None:
        super().__init__()
        self._named = named

    def named_parameters(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        yield from self._named

    def parameters(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        for _, param in self._named:
            yield param


def from_cli() -> bool:
    """True while LightningCLI instantiates the module (it records the given hyperparameters itself)."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    return _given_hyperparameters.get() is not None
