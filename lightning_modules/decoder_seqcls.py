"""Sequence-classification head on a decoder LM: ``AutoModelForSequenceClassification`` + LoRA, head trained in full.

The route for Chinese text on these machines (no Chinese encoder ships offline; gemma-3-270m is multilingual).
The classification task (losses with class weights from ``class_counts``, metrics, test reports and predictions)
is the encoder classifier's, :class:`~lightning_modules.encoder_classifier.ClassificationModule`, and so is the
data (TextClassificationDataModule); the optimiser and the adapter-only checkpoints are the generative
classifier's, :class:`~lightning_modules.peft_adapters.AdapterTrainingMixin`.

Pooling: HF's decoder sequence classifiers read the logits at the last token that is not ``pad_token_id`` (the
rightmost non-pad token, so left and right padding both work; position ids come from the attention mask, so a
left-padded text gets the same positions, and the same logits, as unpadded - tested). The pad id is set on the model config from the
tokenizer, the same rule the DataModule pads with (``pad_token_id or 0``); a tokenizer without a pad token must
not produce id 0 in real text (true for Gemma, Llama and SmolLM2 tokenizers, whose id 0 is a special token).

Checkpoints hold only the trainable weights (LoRA + the ``score`` head); ``strict_loading`` is off.
"""

from __future__ import annotations

from typing import Optional

import torch

from lightning_modules.encoder_classifier import ClassificationModule, check_label_names
from lightning_modules.hparams import save_constructor_arguments
from lightning_modules.optim import AdamWImpl, Schedule
from lightning_modules.peft_adapters import AdapterTrainingMixin, build_peft_config
from losses import ClassificationLoss


class DecoderSequenceClassifier(AdapterTrainingMixin, ClassificationModule):
    """Decoder LM + LoRA + a linear ``score`` head (trained in full) over the last real token.

    Args:
        pretrained: Causal LM: hub id, folder, ``.gguf`` or ``packaged:gemma3-270m`` / ``packaged:smollm2-135m``.
        num_classes: Linked from the DataModule.
        label_names: Linked.
        class_counts: Linked (class-weighted losses).
        vocab_size: Linked; must be None (feature markers are not supported on decoders here).
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        target_modules: Layers with LoRA (default q/k/v/o/gate/up/down).
        loss: Loss module (cross-entropy by default).
        lr: Peak learning rate of LoRA and head.
        weight_decay: AdamW weight decay.
        warmup: Warmup fraction (< 1) or steps.
        schedule: Decay after warmup.
        adamw_impl: AdamW update implementation: ``default`` (torch's per-parameter loop on CPU), ``foreach``
            or ``fused`` (fewer, larger ops; the same update). Unsupported here: the default, with a warning.
    """

    def __init__(
        self,
        pretrained: str,
        num_classes: int = 2,
        label_names: Optional[list[str]] = None,
        class_counts: Optional[list[int]] = None,
        vocab_size: Optional[int] = None,
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        target_modules: Optional[list[str]] = None,
        loss: Optional[ClassificationLoss] = None,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        warmup: float = 0.06,
        schedule: Schedule = "linear",
        adamw_impl: AdamWImpl = "default",
    ) -> None:
        if vocab_size:
            raise ValueError("DecoderSequenceClassifier does not support added marker tokens (vocab_size)")
        super().__init__()
        save_constructor_arguments(self)
        check_label_names(label_names, num_classes)
        self._build_model(num_classes)
        self._init_classification(num_classes, class_counts, loss)
        self.strict_loading = False

    def _build_model(self, num_outputs: int) -> None:
        from peft import get_peft_model
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from fenlei.pretrained import DECODER_OFFLINE_CHOICE, from_pretrained

        hp = self.hparams
        base = from_pretrained(AutoModelForSequenceClassification.from_pretrained, hp.pretrained,
                               offline_choice=DECODER_OFFLINE_CHOICE, num_labels=num_outputs, dtype=torch.float32)
        tokenizer = from_pretrained(AutoTokenizer.from_pretrained, hp.pretrained, offline_choice=DECODER_OFFLINE_CHOICE)
        base.config.pad_token_id = tokenizer.pad_token_id or 0  # as TextClassificationDataModule pads
        config = build_peft_config("lora", hp.lora_r, hp.lora_alpha, hp.lora_dropout, hp.get("target_modules"), 0,
                                   task_type="SEQ_CLS", modules_to_save=["score"])
        # The head is the model's own `score` layer (trained in full via modules_to_save).
        self.backbone = get_peft_model(base, config)
        self.backbone.train()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Positions from the mask: with left padding a real token keeps the position it has unpadded.
        positions = (attention_mask.cumsum(1) - 1).clamp(min=0)
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits
