"""Parameter groups (layer-wise lr decay, no weight decay on biases and norms) and warmup schedules."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any, Literal

from torch import nn
from torch.optim.lr_scheduler import LambdaLR

Schedule = Literal["linear", "cosine", "constant"]
# How AdamW runs its update: torch's default (a per-parameter loop on CPU), ``foreach`` (one multi-tensor op per
# step quantity) or ``fused`` (one kernel per step; CPU support since torch 2.4). Same arithmetic, fewer ops.
AdamWImpl = Literal["default", "foreach", "fused"]

_NO_DECAY_MARKERS = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight", "norm.weight")


def _split_decay(named: Iterable[tuple[str, nn.Parameter]]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    decay, no_decay = [], []
    for name, param in named:
        (no_decay if name.endswith(_NO_DECAY_MARKERS) or param.ndim < 2 else decay).append(param)
    return decay, no_decay


def param_groups(
    blocks: list[tuple[str, nn.Module, float]], weight_decay: float
) -> list[dict]:
    """One decay and one no-decay group per ``(name, module, lr)`` block, including frozen parameters.

    Frozen parameters stay in their groups (AdamW skips parameters without gradients), so unfreezing later
    only flips ``requires_grad``: the optimizer and the LR scheduler already know every group.
    """
    groups = []
    for name, module, lr in blocks:
        decay, no_decay = _split_decay(module.named_parameters())
        if decay:
            groups.append({"name": f"{name}", "params": decay, "lr": lr, "weight_decay": weight_decay})
        if no_decay:
            groups.append({"name": f"{name}.no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0})
    return groups


def warmup_decay_lambda(warmup_steps: int, total_steps: int, schedule: Schedule, min_ratio: float = 0.0):
    """Multiplier of the base lr: linear warmup over ``warmup_steps``, then linear/cosine decay to ``min_ratio``."""
    total_steps = max(total_steps, 1)

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_ratio + (1.0 - min_ratio) * shape

    return factor


def build_scheduler(optimizer, warmup_steps: int, total_steps: int, schedule: Schedule) -> LambdaLR:
    return LambdaLR(optimizer, warmup_decay_lambda(warmup_steps, total_steps, schedule))


def resolve_warmup(warmup: float, total_steps: int) -> int:
    """Warmup steps: ``warmup`` below 1 is a fraction of ``total_steps``, otherwise a step count."""
    return int(warmup * total_steps) if warmup < 1 else int(warmup)


def make_adamw(params: list, lr: float, weight_decay: float, impl: AdamWImpl = "default") -> Any:
    """``torch.optim.AdamW`` with the update implementation ``impl``; where this torch or these parameters' device
    or dtype do not support it, the default implementation, with a one-line warning."""
    import torch

    if impl not in ("default", "foreach", "fused"):
        raise ValueError(f"adamw_impl: choose default, foreach or fused, got {impl!r}")
    if impl != "default":
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **{impl: True})
        except (RuntimeError, ValueError, TypeError) as err:
            warnings.warn(f"adamw_impl {impl} is not supported here ({err}); using the default AdamW", stacklevel=2)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def adamw_on_trainable(module: nn.Module, lr: float, weight_decay: float, warmup: float, schedule: Schedule,
                       total_steps: int, impl: AdamWImpl = "default") -> dict:
    """Lightning optimizer config: AdamW (update implementation ``impl``) over the parameters that require grad
    (adapters, trained heads), with warmup and decay stepped per optimizer step."""
    optimizer = make_adamw([p for p in module.parameters() if p.requires_grad], lr, weight_decay, impl)
    scheduler = build_scheduler(optimizer, resolve_warmup(warmup, total_steps), total_steps, schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
