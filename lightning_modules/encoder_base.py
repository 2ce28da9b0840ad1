"""What every encoder-based module shares: its hyperparameters, backbone loading, pooling, head, freezing and the
optimizer plan.

The encoder hyperparameters (``pretrained``, ``pooling``, ``head``, ``lr`` ...) are declared once, in
``EncoderModule.__init__``. A subclass declares only its own arguments and passes the rest on::

    def __init__(self, *args: Any, loss: Optional[ClassificationLoss] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._build_encoder(self.hparams.num_classes)

jsonargparse follows ``**kwargs`` into this signature (with its docstring), so the CLI lists every argument and
the YAML keys stay flat (``model.init_args.lr``); the hyperparameters are saved here, where Lightning sees the
arguments of the whole subclass chain, so checkpoints hold the same keys as when every class spelled them out.

The learning-rate plan: one parameter group per block (head, each transformer layer, embeddings), built up front
for all parameters, frozen ones included, so unfreezing only flips ``requires_grad``. A ``StagedUnfreezing``
callback in the trainer replaces the single warmup/decay multiplier by one multiplier per group (see
``lightning_modules.staged_unfreezing``).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import nn

from fenlei.errors import FenleiError
from fenlei.pretrained import from_pretrained
from lightning_modules.backbones import embeddings, set_trainable, transformer_layers
from lightning_modules.hparams import save_constructor_arguments
from lightning_modules.optim import Schedule, build_scheduler, param_groups, resolve_warmup
from lightning_modules.seen_rows_embedding import SeenRowsEmbedding

Pooling = Literal["cls", "mean"]


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
    """Backbone + pooling + head, freezing and parameter groups; subclasses add the task (loss, metrics).

    Args:
        pretrained: HF hub id or local folder of the encoder, or ``packaged:minilm`` / ``packaged:mpnet``.
        num_classes: Number of classes, the bins of a numeric target (linked from the DataModule; not set in YAML).
        label_names: Class (bin) names in id order (linked from the DataModule; stored in checkpoints for export).
        class_counts: Training examples per class or bin (linked; feeds class-weighted losses).
        vocab_size: Tokenizer size when the DataModule added marker tokens (linked); the embeddings are resized.
        pooling: ``cls`` (first token) or ``mean`` (mean over non-padding tokens; native for sentence encoders).
        head: ``linear`` (dropout + linear) or ``mlp`` (Linear-GELU-Dropout-Linear).
        head_hidden_size: Width of the MLP head's hidden layer (default: the encoder's hidden size).
        dropout: Dropout in the head.
        freeze_embeddings: Keep the embedding block frozen.
        freeze_layers: Keep the bottom N transformer layers frozen (embeddings are frozen too when N > 0).
        lr: Peak learning rate of the encoder's top layer.
        head_lr: Peak learning rate of the head (default ``lr``); a larger head lr lets the randomly initialised
            head catch up with the pretrained encoder.
        weight_decay: AdamW weight decay (not applied to biases and norms).
        layerwise_lr_decay: Layer ``i`` from the top gets ``lr * decay**i``; embeddings get one more factor.
        warmup: Warmup length: a fraction of all training steps if < 1, else a number of steps.
        schedule: Decay after warmup: ``linear``, ``cosine`` or ``constant``.
        fused_adamw: Use torch's fused AdamW kernel (faster on CPU and GPU).
        embedding_rows: ``all`` trains the whole word-embedding matrix; ``seen`` trains only the rows of tokens in
            the training split during ``fit`` (the others get zero gradients anyway, and their weight decay is
            applied exactly), the same result at a fraction of the step time for a large multilingual vocabulary
            (see ``lightning_modules.seen_rows_embedding``). Needs a DataModule with ``train_token_ids()``.
    """

    backbone: nn.Module
    head: nn.Module

    def __init__(
        self,
        pretrained: str,
        num_classes: int = 2,
        label_names: Optional[list[str]] = None,
        class_counts: Optional[list[int]] = None,
        vocab_size: Optional[int] = None,
        pooling: Pooling = "cls",
        head: Literal["linear", "mlp"] = "linear",
        head_hidden_size: Optional[int] = None,
        dropout: float = 0.1,
        freeze_embeddings: bool = False,
        freeze_layers: int = 0,
        lr: float = 5e-5,
        head_lr: Optional[float] = None,
        weight_decay: float = 0.01,
        layerwise_lr_decay: float = 1.0,
        warmup: float = 0.06,
        schedule: Schedule = "linear",
        fused_adamw: bool = True,
        embedding_rows: Literal["all", "seen"] = "all",
    ) -> None:
        super().__init__()
        save_constructor_arguments(self)

    def _build_encoder(self, num_outputs: int, head: Optional[nn.Module] = None) -> None:
        from transformers import AutoModel

        hp = self.hparams
        self.backbone = from_pretrained(AutoModel.from_pretrained, hp.pretrained)
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

    # ---- training only the embedding rows the data reaches ----

    def setup(self, stage: str) -> None:
        if stage != "fit" or self.hparams.get("embedding_rows", "all") != "seen":
            return
        current = self.backbone.get_input_embeddings()
        if isinstance(current, SeenRowsEmbedding) or self.hparams.freeze_embeddings or self.hparams.freeze_layers > 0:
            return  # already swapped (a second fit), or frozen for good
        source = getattr(self.trainer, "datamodule", None)
        if not hasattr(source, "train_token_ids"):
            raise FenleiError(
                "model.init_args.embedding_rows: 'seen' needs a DataModule with train_token_ids() (the token ids "
                f"of the training split); {type(source).__name__} has none"
            )
        self.backbone.set_input_embeddings(SeenRowsEmbedding(current, source.train_token_ids()))

    def on_fit_end(self) -> None:
        current = self.backbone.get_input_embeddings()
        if isinstance(current, SeenRowsEmbedding):
            self.backbone.set_input_embeddings(current.restore())

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # After backward, before the update: the gradients say which parameters this step will touch.
        current = self.backbone.get_input_embeddings()
        if isinstance(current, SeenRowsEmbedding):
            current.count_optimizer_step(optimizer)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: Optional[float] = None,
        gradient_clip_algorithm: Optional[str] = None,
    ) -> None:
        # Lightning's MixedPrecision refuses to clip with an optimizer that could unscale gradients itself (the
        # fused AdamW), even under bf16 autocast, which has no gradient scaler and so nothing to unscale: every
        # bf16-mixed config with gradient_clip_val crashed on CPUs with native bf16. Without a scaler, clipping
        # is the plain precision plugin's, so clip there.
        plugin = self.trainer.precision_plugin
        if gradient_clip_val and isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val,
                                     GradClipAlgorithmType(gradient_clip_algorithm or "norm"))
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

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

