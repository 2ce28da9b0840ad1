"""PEFT adapters on a frozen decoder LM: the adapter config, and the optimiser and checkpoint rules of a module
that trains one (the generative classifier and the decoder sequence classifier)."""

from __future__ import annotations

from typing import Any, Optional

import torch

from lightning_modules.optim import adamw_on_trainable

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_peft_config(method: str, r: int, alpha: int, dropout: float, target_modules: Optional[list[str]],
                      num_virtual_tokens: int, task_type: str = "CAUSAL_LM",
                      modules_to_save: Optional[list[str]] = None) -> Any:
    from peft import LoraConfig, PrefixTuningConfig

    if method == "lora":
        return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules or DEFAULT_TARGETS,
                          task_type=task_type, modules_to_save=modules_to_save)
    if method == "prefix":  # P-tuning v2: trainable key/value prefixes in every layer
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=num_virtual_tokens)
    raise ValueError(f"unknown peft_method {method!r}; choose lora or prefix")


def adapter_state_dict(module: torch.nn.Module, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Only the trainable entries of ``state_dict`` (the frozen base is reloaded from ``pretrained``)."""
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in state_dict.items() if k in trainable}


class AdapterTrainingMixin:
    """For LightningModules that train a PEFT adapter (and heads) on a frozen base: AdamW over the trainable
    parameters with the module's ``lr``/``weight_decay``/``warmup``/``schedule``/``adamw_impl`` hparams (checkpoints
    made before ``adamw_impl`` existed: the default), and checkpoints holding the trainable weights only (set
    ``strict_loading = False``; the base comes from ``pretrained``)."""

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return adamw_on_trainable(self, hp.lr, hp.weight_decay, hp.warmup, hp.schedule,
                                  int(self.trainer.estimated_stepping_batches), hp.get("adamw_impl") or "default")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = adapter_state_dict(self, checkpoint["state_dict"])
