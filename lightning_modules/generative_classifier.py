"""Generative classifier: a decoder LM with a LoRA or prefix (P-tuning v2) adapter answers a prompt with JSON.

Training: the ordinary LM loss on the answer tokens only (the DataModule sets ``labels`` to -100 on the prompt and
on padding). Decoding, both kept for comparison:

- ``score`` (label scoring, :mod:`lightning_modules.label_scoring`): the log-probability of every allowed value
  (plus its closing quote) after the prompt, under constrained decoding (``label_normalisation="labels"``) or
  under the LM (``"vocab"``); the prompt is encoded once, then one forward per field over the label tree.
  Always a valid label: parse failures and hallucinations are zero by construction. Several fields are decoded in
  order, each conditioned on the values chosen for the earlier fields.
- ``generate`` (free greedy generation, ``model.generate``) and a JSON/regex parser: outputs that cannot be parsed
  count as parse failures, parsed values outside the label set as hallucinations (both count as wrong).

Metrics per decoding and field: accuracy, macro-F1 (over the classes present in the targets or the valid
predictions), parse-failure rate, hallucination rate, examples/s. ``val/f1_macro`` (checkpoint monitor) is the
first field under the first ``val_decoding``.

Checkpoints hold only the trainable (adapter) weights; ``strict_loading`` is off so the frozen base comes from
``pretrained``. At the end of ``fit`` the adapter of the BEST checkpoint (the checkpoint callback's monitor; the last
step's weights when there is none) is also written with ``save_pretrained`` to ``<run>/adapter``.
``python cli.py merge --ckpt_path CKPT --out DIR`` writes a merged HF model (LoRA only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal, Optional

import lightning.pytorch as pl
import torch

from fenlei.io import atomic_dir
from lightning_modules.label_scoring import score_labels
from lightning_modules.optim import Schedule, adamw_on_trainable

Decoding = Literal["score", "generate"]
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


def _left_pad(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for r, seq in enumerate(rows):
        ids[r, width - len(seq) :] = torch.tensor(seq, dtype=torch.long, device=device)
        mask[r, width - len(seq) :] = 1
    return ids, mask


class AdapterTrainingMixin:
    """For LightningModules that train a PEFT adapter (and heads) on a frozen base: AdamW over the trainable
    parameters with the module's ``lr``/``weight_decay``/``warmup``/``schedule`` hparams, and checkpoints holding the
    trainable weights only (set ``strict_loading = False``; the base comes from ``pretrained``)."""

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return adamw_on_trainable(self, hp.lr, hp.weight_decay, hp.warmup, hp.schedule,
                                  int(self.trainer.estimated_stepping_batches))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = adapter_state_dict(self, checkpoint["state_dict"])


class _Tally:
    """Accumulates one decoding's predictions over an epoch."""

    def __init__(self) -> None:
        self.preds: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.failed: list[torch.Tensor] = []
        self.hallucinated: list[torch.Tensor] = []
        self.seconds = 0.0

    @classmethod
    def merge(cls, parts: list[dict[str, Any]]) -> _Tally:
        """One tally from several processes' ``{"preds", "targets", "failed", "hallucinated", "seconds"}``."""
        merged = cls()
        for part in parts:
            merged.preds.append(part["preds"].cpu())
            merged.targets.append(part["targets"].cpu())
            merged.failed.append(part["failed"].cpu())
            merged.hallucinated.append(part["hallucinated"].cpu())
            merged.seconds = max(merged.seconds, float(part["seconds"]))
        return merged

    def compute(self, names: list[str]) -> dict[str, Any]:
        from fenlei.metrics import macro_f1

        preds, targets = torch.cat(self.preds), torch.cat(self.targets)
        failed, halluc = torch.cat(self.failed), torch.cat(self.hallucinated)
        n = len(preds)
        out: dict[str, Any] = {"examples_per_s": n / max(self.seconds, 1e-9), "num_examples": n, "fields": {}}
        for k, name in enumerate(names):
            p, t = preds[:, k].numpy(), targets[:, k].numpy()
            classes = sorted((set(t.tolist()) | set(p.tolist())) - {-1})
            out["fields"][name] = {
                "accuracy": float(((p == t) & (t >= 0)).mean()),  # a target unseen in train (-1) is never right
                "f1_macro": macro_f1(t, p, labels=classes) if classes else 0.0,
                "parse_failure_rate": float(failed[:, k].float().mean()),
                "hallucination_rate": float(halluc[:, k].float().mean()),
            }
        first = out["fields"][names[0]]
        out.update(accuracy=first["accuracy"], f1_macro=first["f1_macro"],
                   parse_failure_rate=float(failed.any(1).float().mean()),
                   hallucination_rate=float(halluc.any(1).float().mean()))
        return out


class GenerativeClassifier(AdapterTrainingMixin, pl.LightningModule):
    """Decoder LM + PEFT adapter that answers a classification prompt; decoded by label scoring or generation.

    Args:
        pretrained: Causal LM: hub id (e.g. ``google/functiongemma-270m-it``), folder, ``.gguf`` file or
            ``packaged:gemma3-270m`` / ``packaged:smollm2-135m``.
        tokenizer_path: Tokenizer for decoding generated text and for ``merge`` when the module is used without its
            DataModule (default: ``pretrained``; named so as not to clash with the DataModule's ``tokenizer``).
        num_classes: Classes of the first field (linked from the DataModule).
        label_names: Labels of the first field (linked).
        class_counts: Linked; unused (kept so the CLI link has a target).
        vocab_size: Linked; unused (prompts add no tokens).
        peft_method: ``lora`` or ``prefix`` (prefix tuning / P-tuning v2).
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (scale = alpha / r).
        lora_dropout: Dropout on the LoRA input.
        target_modules: Linear layers that get LoRA (default q/k/v/o/gate/up/down projections; never lm_head or
            embed_tokens of tied-embedding models such as Gemma: merging would corrupt the tie).
        num_virtual_tokens: Prefix length per layer for ``prefix``.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup: Warmup fraction (< 1) or steps.
        schedule: Decay after warmup.
        val_decoding: Decodings run in validation (first = checkpoint monitor).
        test_decoding: Decodings run in test (compare ``score`` with ``generate``).
        max_new_tokens: Generation budget for ``generate``.
        length_normalise: Score labels by mean instead of summed token log-prob.
        label_normalisation: ``labels`` (default): a label's score is its log-probability under constrained
            decoding (at each token a softmax over the tokens that continue some allowed label), so the scores
            are a distribution over the labels; only the LM head rows of label tokens are computed and only
            positions where labels branch are fed. ``vocab``: its log-probability under the LM (softmax over the
            whole vocabulary at each of its tokens, the closing quote included); slower.
        gradient_checkpointing: Trade compute for memory on long prompts.
        answer_spec: Filled from the DataModule at setup and stored in checkpoints (not set in YAML).
    """

    def __init__(
        self,
        pretrained: str,
        tokenizer_path: Optional[str] = None,
        num_classes: int = 2,
        label_names: Optional[list[str]] = None,
        class_counts: Optional[list[int]] = None,
        vocab_size: Optional[int] = None,
        peft_method: Literal["lora", "prefix"] = "lora",
        lora_r: int = 16,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        target_modules: Optional[list[str]] = None,
        num_virtual_tokens: int = 16,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup: float = 0.06,
        schedule: Schedule = "linear",
        val_decoding: list[Decoding] = ["score"],  # noqa: B006 - jsonargparse shows literal defaults
        test_decoding: list[Decoding] = ["score", "generate"],  # noqa: B006
        max_new_tokens: int = 24,
        length_normalise: bool = False,
        label_normalisation: Literal["vocab", "labels"] = "labels",
        gradient_checkpointing: bool = False,
        answer_spec: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        from peft import get_peft_model

        from fenlei.pretrained.causal_lm import load_causal_lm

        base = load_causal_lm(pretrained)
        if gradient_checkpointing:
            base.gradient_checkpointing_enable()
            base.enable_input_require_grads()
        config = build_peft_config(peft_method, lora_r, lora_alpha, lora_dropout, target_modules, num_virtual_tokens)
        self.model = get_peft_model(base, config)
        self.model.train()  # from_pretrained returns eval mode; Lightning 2.6 keeps module modes as found
        self.strict_loading = False  # checkpoints hold the adapter only
        self._tokenizer: Any = None
        self._tallies: dict[str, _Tally] = {}
        self._prefix_store: tuple[list[int], Any, Any] | None = None  # ids, KV cache, (device, autocast)

    # ---- plumbing ----

    @property
    def spec(self) -> Any:
        from datamodules.prompt_classification import AnswerSpec

        if self.hparams.get("answer_spec") is None:
            raise RuntimeError("no answer_spec: train or load with a PromptClassificationDataModule")
        return AnswerSpec.from_dict(self.hparams.answer_spec)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from fenlei.pretrained.causal_lm import load_tokenizer

            self._tokenizer = load_tokenizer(self.hparams.tokenizer_path or self.hparams.pretrained)
        return self._tokenizer

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "answer_spec"):
            self.hparams["answer_spec"] = datamodule.answer_spec.to_dict()
            self._tokenizer = datamodule.tokenizer

    @property
    def scoring_strategy(self) -> str:
        # Prefix tuning injects its own key/value prefixes, which a reused, repeated prompt cache cannot carry.
        return "concat" if self.hparams.peft_method == "prefix" else "kv_cache"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``[B, T, V]`` (positions from the mask, so either padding side works)."""
        positions = (attention_mask.cumsum(1) - 1).clamp(min=0)
        kwargs = {} if self.hparams.peft_method == "prefix" else {"position_ids": positions}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits

    def lm_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens (``labels != -100``).

        The batch is re-packed to LEFT padding so every row's answer ends at the last position; then only the
        last ``longest answer + 1`` positions need logits (``logits_to_keep``). With Gemma's 262k vocabulary the
        LM head over the whole prompt would cost more than the transformer itself. Positions come from the mask,
        so they equal those of the unpadded sequence (and of label scoring).
        """
        if self.hparams.peft_method == "prefix":  # PEFT prompt learning ignores position_ids: keep right padding
            return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        order = attention_mask.argsort(dim=1, stable=True)  # pads first, real tokens keep their order
        ids, mask, labels = input_ids.gather(1, order), attention_mask.gather(1, order), labels.gather(1, order)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        answer_len = int((labels != -100).sum(1).max())
        if answer_len == 0:  # only rows whose values never occur in train (evaluation): nothing to score
            return torch.zeros((), device=input_ids.device)
        keep = answer_len + 1
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        targets = labels[:, ids.shape[1] - keep + 1 :]
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                                 ignore_index=-100)

    # ---- decoding ----

    @staticmethod
    def _prompts(batch: dict[str, torch.Tensor]) -> list[list[int]]:
        return [row[mask.bool()].tolist() for row, mask in zip(batch["prompt_ids"], batch["prompt_mask"], strict=True)]

    def _trees(self) -> list[Any]:
        """Each field's :class:`LabelTree`, built once per label set and normalisation (not per batch)."""
        from lightning_modules.label_scoring import LabelTree

        spec, norm = self.spec, self.hparams.label_normalisation
        key = (norm, tuple(tuple(map(tuple, spec.scored_ids(k))) for k in range(len(spec.fields))))
        cached = getattr(self, "_tree_cache", None)
        if cached is None or cached[0] != key:
            self._tree_cache = (key, [LabelTree(spec.scored_ids(k), norm) for k in range(len(spec.fields))])
        return self._tree_cache[1]

    def _tree_path_ok(self, prompts: list[list[int]]) -> bool:
        """Whether the one-forward-per-field tree path is exact here: LoRA (prefix tuning injects its own cache),
        an attention that takes a custom 4-D mask, and everything (prompt, nodes, continuations, holes included)
        within every sliding-window layer (the custom mask does not apply the window)."""
        from lightning_modules.label_scoring import sliding_window, tree_attention_supported

        if self.hparams.peft_method == "prefix" or not tree_attention_supported(self.model):
            return False
        window = sliding_window(self.model)
        spec = self.spec
        slots = max(map(len, prompts)) + len(spec.openers[0]) + sum(
            len(tree) + max(map(len, ids)) + len(spec.quote) + len(opener)
            for tree, ids, opener in zip(self._trees(), spec.label_ids, [*spec.openers[1:], []], strict=True))
        return window is None or slots < window

    @torch.no_grad()
    def decode_score(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Label scoring: ``[B, F]`` class ids and each field's ``[B, C_k]`` label log-probs.

        One forward per field (:class:`~lightning_modules.label_scoring.LabelTree`): the first runs over each
        prompt's own tokens (the instruction shared by all prompts is encoded once per evaluation loop) followed
        by field 0's label tree; field ``k``'s runs over the rest of the chosen value, its closing quote and the
        next field's opener, followed by field ``k``'s tree. Prefix tuning (and a prompt too long for a sliding
        window) re-encodes the prompt per field instead.
        """
        prompts = self._prompts(batch)
        if self._tree_path_ok(prompts):
            return self._decode_score_tree(batch, prompts)
        return self._decode_score_per_field(batch)

    # Prompts share their instruction and label lists; only the text at the end differs. That common prefix is
    # encoded once per evaluation loop, not per batch: on the Endava benchmark it is 77 of 128 prompt tokens, and
    # label scoring went from 1.31 to 1.79 examples/s.
    MIN_SHARED_PREFIX = 8

    def clear_prompt_cache(self) -> None:
        """Forget the encoded shared prompt prefix (done automatically whenever the weights may change)."""
        self._prefix_store = None

    def train(self, mode: bool = True) -> GenerativeClassifier:
        self.clear_prompt_cache()  # eval() comes through here too: every new evaluation loop starts clean
        return super().train(mode)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.clear_prompt_cache()

    def _shared_prefix(self, rows: list[list[int]]) -> tuple[list[int], Any] | None:
        """``(prefix ids, batch-1 KV cache)`` of a prefix common to all ``rows`` (at least one token of each row
        left over), or None when they share too little. The prefix found for the first batch is kept and reused
        by later batches that start with it, so an evaluation loop encodes the instruction once (twice at batch 1:
        the first row's prefix is the row itself)."""
        import copy
        import os.path

        shortest = min(map(len, rows))
        device = next(self.model.parameters()).device
        stored = getattr(self, "_prefix_store", None)
        if stored is not None and stored[2] != (device, torch.is_autocast_enabled(device.type)):
            stored = self._prefix_store = None  # the module moved to another device or precision since
        if stored is not None:
            ids, cache, _ = stored
            if len(ids) < shortest and all(r[: len(ids)] == ids for r in rows):
                return ids, copy.deepcopy(cache)
        # A single row shares all of itself with itself: compare it with the stored prefix instead, so that one-by-one
        # decoding (batch 1, the service case) settles on the instruction after the second row and reuses it.
        pool = rows if len(rows) > 1 or stored is None else [stored[0], *rows]
        ids = list(os.path.commonprefix(pool))[: shortest - 1]
        if len(ids) < self.MIN_SHARED_PREFIX:
            return None
        out = self.model(input_ids=torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1)
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        self._prefix_store = (ids, cache, (device, torch.is_autocast_enabled(device.type)))
        return ids, copy.deepcopy(cache)

    @torch.no_grad()
    def _decode_score_tree(self, batch: dict[str, torch.Tensor], prompts: list[list[int]]
                           ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        from lightning_modules.label_scoring import extend_with_tree

        spec, trees = self.spec, self._trees()
        device, n = batch["prompt_ids"].device, len(prompts)
        rows = [p + spec.openers[0] for p in prompts]
        shared = self._shared_prefix(rows)
        if shared is None:
            cache, past, block = None, torch.zeros(n, 0, dtype=torch.long, device=device), rows
        else:
            prefix, cache = shared
            cache.batch_repeat_interleave(n)
            past = torch.ones(n, len(prefix), dtype=torch.long, device=device)
            block = [r[len(prefix) :] for r in rows]
        lengths = past.sum(1)
        choice = torch.zeros(n, len(spec.fields), dtype=torch.long)
        all_scores = []
        pad = self.tokenizer.pad_token_id or 0
        for k, tree in enumerate(trees):
            ids, block_mask = _left_pad(block, pad, device)
            cache, head = extend_with_tree(self.model, tree, ids, block_mask, cache, past, lengths)
            token_logp = tree.token_logp(head)
            scores = token_logp.sum(-1)
            if self.hparams.length_normalise:
                scores = scores / tree.lengths.to(scores.device)
            choice[:, k] = scores.argmax(-1).cpu()
            all_scores.append(scores)
            if k == len(trees) - 1:
                break
            # Keep the chosen label's nodes in the cache; the other nodes stay masked holes. The next block is the
            # rest of the chosen value (the tokens that were not nodes), its closing quote and the next opener.
            path = tree.path_mask(choice[:, k]).to(device)
            past = torch.cat([past, block_mask, path], 1)
            lengths = lengths + block_mask.sum(1) + path.sum(1)
            block = [spec.label_ids[k][c][tree.fed_tokens[c] :] + spec.quote + spec.openers[k + 1]
                     for c in choice[:, k].tolist()]
        return choice, all_scores

    @torch.no_grad()
    def _decode_score_per_field(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec, prompts = self.spec, self._prompts(batch)
        pad = self.tokenizer.pad_token_id or 0
        choice = torch.zeros(len(prompts), len(spec.fields), dtype=torch.long)
        all_scores = []
        for k in range(len(spec.fields)):
            rows = [p + spec.prefix_ids(choice[b].tolist(), k) for b, p in enumerate(prompts)]
            ids, mask = _left_pad(rows, pad, batch["prompt_ids"].device)
            scores = score_labels(self.model, ids, spec.scored_ids(k), self.hparams.length_normalise, mask,
                                  strategy=self.scoring_strategy,
                                  normalisation=self.hparams.label_normalisation)
            choice[:, k] = scores.argmax(-1).cpu()
            all_scores.append(scores)
        return choice, all_scores

    @torch.no_grad()
    def decode_generate(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """Greedy generation + parser: ``[B, F]`` class ids (-1 = failed or hallucinated), failure and
        hallucination masks, and the generated texts."""
        from datamodules.prompt_classification import parse_answer

        spec, tok = self.spec, self.tokenizer
        out = self.model.generate(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"],
                                  max_new_tokens=self.hparams.max_new_tokens, do_sample=False,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts = tok.batch_decode(out[:, batch["prompt_ids"].shape[1] :], skip_special_tokens=True)
        n, f = len(texts), len(spec.fields)
        preds = torch.full((n, f), -1, dtype=torch.long)
        failed = torch.zeros((n, f), dtype=torch.bool)
        halluc = torch.zeros((n, f), dtype=torch.bool)
        for b, text in enumerate(texts):
            for k, value in enumerate(parse_answer(text, spec)):
                if value is None:
                    failed[b, k] = True
                elif value in spec.labels[k]:
                    preds[b, k] = spec.labels[k].index(value)
                else:
                    halluc[b, k] = True
        return preds, failed, halluc, texts

    def _run_decoding(self, name: str, batch: dict[str, torch.Tensor], stage: str) -> None:
        tally = self._tallies.setdefault(f"{stage}/{name}", _Tally())
        start = time.perf_counter()
        if name == "score":
            preds, _ = self.decode_score(batch)
            failed = halluc = torch.zeros_like(preds, dtype=torch.bool)
        elif name == "generate":
            preds, failed, halluc, _ = self.decode_generate(batch)
        else:
            raise ValueError(f"unknown decoding {name!r}; choose score or generate")
        tally.seconds += time.perf_counter() - start
        tally.preds.append(preds)
        tally.targets.append(batch["targets"].cpu())
        tally.failed.append(failed)
        tally.hallucinated.append(halluc)

    # ---- steps ----

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.lm_loss(batch["input_ids"], batch["attention_mask"], batch["labels"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str, decodings: list[str]) -> None:
        loss = self.lm_loss(batch["input_ids"], batch["attention_mask"], batch["labels"])
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(batch["input_ids"]))
        for name in decodings:
            self._run_decoding(name, batch, stage)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", list(self.hparams.val_decoding))

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", list(self.hparams.test_decoding))

    def on_validation_epoch_start(self) -> None:
        self._reset("val")

    def on_test_epoch_start(self) -> None:
        self._reset("test")

    def _reset(self, stage: str) -> None:
        for key in [k for k in self._tallies if k.startswith(stage + "/")]:
            del self._tallies[key]

    def compute_metrics(self, stage: str) -> dict[str, dict[str, Any]]:
        """Per-decoding metrics of the finished epoch: ``{"score": {...}, "generate": {...}}``."""
        names = self.spec.names
        return {key.split("/", 1)[1]: tally.compute(names) for key, tally in self._tallies.items()
                if key.startswith(stage + "/") and tally.preds}

    def _gather_tallies(self, stage: str, decodings: list[str]) -> None:
        """Under DDP each process decoded its own shard: replace every tally by the union of all processes' tallies
        (``all_gather_object``), so that the metrics, the checkpoint monitor and the written reports cover the whole
        split. Called from the epoch-end hooks, which every process runs, for a fixed list of decodings (a
        collective must be entered by all processes in the same order). examples/s becomes all examples over the
        slowest process's decoding time (the processes decode in parallel). Note: a DistributedSampler repeats a
        few examples to give every process the same number of batches."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        for name in decodings:
            key = f"{stage}/{name}"
            mine = self._tallies.get(key)
            local = None if mine is None or not mine.preds else {
                "preds": torch.cat(mine.preds), "targets": torch.cat(mine.targets), "failed": torch.cat(mine.failed),
                "hallucinated": torch.cat(mine.hallucinated), "seconds": mine.seconds}
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
            self._tallies[key] = _Tally.merge([part for part in parts if part is not None])

    def _log_metrics(self, stage: str, decodings: list[str]) -> dict[str, dict[str, Any]]:
        self._gather_tallies(stage, decodings)
        results = self.compute_metrics(stage)
        flat: dict[str, float] = {}
        for dec, res in results.items():
            flat[f"{stage}/{dec}/examples_per_s"] = res["examples_per_s"]
            for field, values in res["fields"].items():
                for metric, value in values.items():
                    flat[f"{stage}/{dec}/{field}/{metric}"] = value
        if decodings and decodings[0] in results:
            primary = results[decodings[0]]
            flat[f"{stage}/f1_macro"], flat[f"{stage}/acc"] = primary["f1_macro"], primary["accuracy"]
        self.log_dict(flat)
        return results

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", list(self.hparams.val_decoding))

    def on_test_epoch_end(self) -> None:
        results = self._log_metrics("test", list(self.hparams.test_decoding))
        if not results:
            return
        from fenlei.training.reporting import TestReport

        # Written into the run's test/ by fenlei.training.callbacks.TestReportWriter; the per-class report is the
        # first field's under label scoring.
        self.test_report = TestReport({}, decoding_metrics=results)
        if "score" in results:
            tally = self._tallies["test/score"]
            self.test_report = TestReport(
                {"test/acc": results["score"]["accuracy"], "test/f1_macro": results["score"]["f1_macro"]},
                torch.cat(tally.targets)[:, 0].numpy(), torch.cat(tally.preds)[:, 0].numpy(), self.spec.labels[0],
                decoding_metrics=results)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """First field's label probabilities (``probs``) and every field's (``field_probs``), by label scoring;
        ``cli.py predict`` writes them to ``predict/predictions.jsonl``."""
        _, scores = self.decode_score(batch)
        field_probs = [torch.softmax(s.float(), dim=-1).cpu() for s in scores]
        return {"index": batch["index"], "probs": field_probs[0], "field_probs": field_probs}

    def field_label_names(self) -> list[tuple[str, list[str]]]:
        """``(name, labels)`` of each answer field, for prediction writers."""
        spec = self.spec
        return list(zip(spec.names, spec.labels, strict=True))

    # ---- end of fit (the optimiser and adapter-only checkpoints: AdapterTrainingMixin) ----

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and not self.trainer.fast_dev_run:
            state, source = self._best_adapter_state()
            self.save_adapter(Path(self.trainer.default_root_dir) / "adapter", state, source)

    def _best_adapter_state(self) -> tuple[Optional[dict[str, torch.Tensor]], str]:
        """The adapter weights of the checkpoint callback's best checkpoint (``None`` and ``"last"`` when there is no
        such file: then the weights in memory, i.e. the last step's, are saved)."""
        callback = getattr(self.trainer, "checkpoint_callback", None)
        path = getattr(callback, "best_model_path", "") or ""
        if not path or not Path(path).is_file():
            return None, "last"
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        # Checkpoint keys are this module's ("model.base_model.model..."); PEFT wants its own ("base_model.model...").
        return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}, str(path)

    def save_adapter(self, directory: Path, state_dict: Optional[dict[str, torch.Tensor]] = None,
                     source: str = "last") -> Path:
        """``save_pretrained`` of the adapter (+ tokenizer, answer_spec.json and ``source.json`` naming the checkpoint
        the weights come from), written atomically. ``state_dict``: adapter weights to save instead of the current."""
        def write(tmp: Path) -> None:
            kwargs = {"state_dict": state_dict} if state_dict is not None else {}
            self.model.save_pretrained(tmp, **kwargs)
            (tmp / "source.json").write_text(json.dumps({"weights": "best checkpoint" if source != "last" else
                                                          "last step", "checkpoint": None if source == "last" else source}))
            self.tokenizer.save_pretrained(tmp)
            if self.hparams.get("answer_spec") is not None:
                (tmp / "answer_spec.json").write_text(json.dumps(self.hparams.answer_spec, ensure_ascii=False))

        atomic_dir(directory, write)
        return directory

    def merged_model(self) -> Any:
        """The base model with the LoRA weights merged in (plain ``transformers`` model, no PEFT needed)."""
        if self.hparams.peft_method != "lora":
            raise ValueError("only LoRA adapters can be merged; prefix tuning needs the PEFT model at inference")
        return self.model.merge_and_unload()


def main(argv: list[str]) -> int:
    """``python cli.py merge --ckpt_path CKPT --out DIR``: merged HF model (AutoModelForCausalLM) + tokenizer."""
    parser = argparse.ArgumentParser(prog="cli.py merge", description=main.__doc__)
    parser.add_argument("--ckpt_path", required=True, help="checkpoint of a GenerativeClassifier fit")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    args = parser.parse_args(argv)
    if not Path(args.ckpt_path).is_file():
        print(f"fenlei: error: --ckpt_path {args.ckpt_path}: no such file", file=sys.stderr)
        return 2
    module = GenerativeClassifier.load_from_checkpoint(args.ckpt_path, map_location="cpu")
    try:
        merged = module.merged_model()
    except ValueError as err:
        print(f"fenlei: error: {err}", file=sys.stderr)
        return 2

    def write(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        module.tokenizer.save_pretrained(tmp)
        if module.hparams.get("answer_spec") is not None:
            (tmp / "answer_spec.json").write_text(json.dumps(module.hparams.answer_spec, ensure_ascii=False))

    atomic_dir(Path(args.out), write)
    print(f"fenlei: merged model written to {args.out}")
    return 0
