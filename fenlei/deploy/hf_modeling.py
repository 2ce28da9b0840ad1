"""fenlei's encoder classifier as a Hugging Face model: backbone + fenlei's pooling + fenlei's head.

``fenlei export --format hf`` copies this file into the exported folder as ``modeling_fenlei.py`` and names its
classes in ``config.json`` (``auto_map``), so that

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    pipeline("text-classification", model=folder, trust_remote_code=True)

build exactly the module fenlei trained (``lightning_modules.encoder_base.EncoderModule``): any ``AutoModel``
encoder without its pooler, then ``cls`` pooling (the first token's last hidden state, no dense + tanh pooler as in
``BertForSequenceClassification``) or ``mean`` pooling (over the tokens the attention mask keeps), then the
``linear`` head (dropout, linear) or the ``mlp`` head (linear, GELU, dropout, linear). A stock
``*ForSequenceClassification`` class would reproduce neither mean pooling nor the MLP head, nor cls pooling
without the pooler's dense layer.

The file must stand alone: it imports torch and transformers only (it is run by people who do not have fenlei).
``token_type_ids`` are accepted and ignored: fenlei trains and serves single texts without them (a BERT then
reads all zeros, which is what a tokenizer gives a single text).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ("cls", "mean")
HEADS = ("linear", "mlp")


class FenleiClassifierConfig(PretrainedConfig):
    """The backbone's own config (``backbone``, a dict with its ``model_type``) and fenlei's pooling and head."""

    model_type = "fenlei_encoder_classifier"

    def __init__(self, backbone: Optional[dict[str, Any]] = None, pooling: str = "cls", head: str = "linear",
                 head_hidden_size: Optional[int] = None, dropout: float = 0.1, **kwargs: Any) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"config.json: pooling: {pooling!r} is not one of {', '.join(POOLINGS)}")
        if head not in HEADS:
            raise ValueError(f"config.json: head: {head!r} is not one of {', '.join(HEADS)}")
        self.backbone = dict(backbone or {})
        self.pooling = pooling
        self.head = head
        self.head_hidden_size = head_hidden_size
        self.dropout = dropout
        super().__init__(**kwargs)

    def backbone_config(self) -> PretrainedConfig:
        values = dict(self.backbone)
        model_type = values.pop("model_type", None)
        if not model_type:
            raise ValueError("config.json: backbone.model_type: missing (the encoder's architecture)")
        return AutoConfig.for_model(model_type, **values)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def build_head(hidden_size: int, num_outputs: int, head: str, head_hidden_size: Optional[int], dropout: float) -> nn.Module:
    """The same modules, in the same order (so the same state-dict keys), as fenlei's ``build_head``."""
    if head == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_outputs))
    width = head_hidden_size or hidden_size
    return nn.Sequential(nn.Linear(hidden_size, width), nn.GELU(), nn.Dropout(dropout), nn.Linear(width, num_outputs))


class FenleiEncoderClassifier(PreTrainedModel):
    """``backbone`` (an ``AutoModel``), pooling, ``head``: the logits of fenlei's ``EncoderClassifier``."""

    config_class = FenleiClassifierConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"

    def __init__(self, config: FenleiClassifierConfig) -> None:
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone_config())
        if getattr(self.backbone, "pooler", None) is not None:
            self.backbone.pooler = None  # fenlei drops it: cls pooling reads the first hidden state as it is
        self.head = build_head(self.backbone.config.hidden_size, config.num_labels, config.head,
                               config.head_hidden_size, config.dropout)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                return_dict: Optional[bool] = None, **kwargs: Any) -> Any:
        if input_ids is None:
            raise ValueError("input_ids is required")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = hidden[:, 0] if self.config.pooling == "cls" else masked_mean(hidden, attention_mask)
        logits = self.head(pooled)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)
