"""Generative classifier: a decoder LM with a LoRA or prefix (P-tuning v2) adapter answers a prompt with JSON.

Training: the ordinary LM loss on the answer tokens only (the DataModule sets ``labels`` to -100 on the prompt and
on padding). Decoding, both kept for comparison:

- ``score`` (label scoring, :mod:`lightning_modules.answer_decoding`): the log-probability of every allowed value
  (plus its closing quote) after the prompt, under constrained decoding (``label_normalisation="labels"``) or
  under the LM (``"vocab"``); the prompt is encoded once, then one forward per field over the label tree.
  Always a valid label: parse failures and hallucinations are zero by construction. Several fields are decoded in
  order, each conditioned on the values chosen for the earlier fields.
- ``generate`` (free greedy generation, ``model.generate``) and a JSON/regex parser: outputs that cannot be parsed
  count as parse failures, parsed values outside the label set as hallucinations (both count as wrong).

Metrics per decoding and field (:mod:`lightning_modules.field_metrics`): accuracy, macro-F1 (over the classes
present in the targets or the valid predictions), parse-failure rate, hallucination rate, examples/s.
``val/f1_macro`` (checkpoint monitor) is the first field under the first ``val_decoding``.

Checkpoints hold only the trainable (adapter) weights; ``strict_loading`` is off so the frozen base comes from
``pretrained``. At the end of ``fit`` the adapter of the BEST checkpoint (the checkpoint callback's monitor; the last
step's weights when there is none) is also written with ``save_pretrained`` to ``<run>/adapter``.
``fenlei merge --ckpt_path CKPT --out DIR`` (:mod:`fenlei.deploy.merge`) writes a merged HF model (LoRA only).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal, Optional

import lightning.pytorch as pl
import torch

from fenlei.io import atomic_dir
from lightning_modules.answer_decoding import AnswerDecoding
from lightning_modules.field_metrics import FieldTally
from lightning_modules.optim import AdamWImpl, Schedule
from lightning_modules.peft_adapters import AdapterTrainingMixin, build_peft_config

Decoding = Literal["score", "generate"]


def check_shared_prefix_exact(peft_method: str, lora_dropout: float, gradient_checkpointing: bool, config: Any) -> None:
    """Refuse ``shared_prefix_training`` where it would not be exact (one line naming the reason)."""
    config = getattr(config, "text_config", None) or config
    reasons = []
    if peft_method != "lora":
        reasons.append(f"peft_method is {peft_method} (prefix tuning puts its own prefix in the cache)")
    if lora_dropout:
        reasons.append(f"lora_dropout is {lora_dropout} (the rows would share the prefix's dropout masks)")
    if gradient_checkpointing:
        reasons.append("gradient_checkpointing is on")
    if getattr(config, "attention_dropout", 0.0):
        reasons.append(f"the model's attention_dropout is {config.attention_dropout}")
    if reasons:
        raise ValueError("shared_prefix_training is exact only without dropout: " + "; ".join(reasons))


class GenerativeClassifier(AdapterTrainingMixin, AnswerDecoding, pl.LightningModule):
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
        adamw_impl: AdamW update implementation: ``default`` (torch's per-parameter loop on CPU), ``foreach``
            or ``fused`` (fewer, larger ops; the same update). Unsupported here: the default, with a warning.
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
        shared_prefix_training: In training, encode the prompt prefix that every text of the batch shares
            (instruction and allowed values) ONCE per batch and run each row's own tokens on its KV cache; gradients
            flow through the shared prefix, so loss and gradients equal the per-row computation up to float
            rounding. Exact only without dropout (a row-shared prefix would share its dropout masks): needs LoRA
            with ``lora_dropout: 0``, no gradient checkpointing and a model without attention dropout (refused
            otherwise); batches that share under 8 tokens, or would exceed a sliding window, take the usual path.
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
        adamw_impl: AdamWImpl = "default",
        val_decoding: list[Decoding] = ["score"],  # noqa: B006 - jsonargparse shows literal defaults
        test_decoding: list[Decoding] = ["score", "generate"],  # noqa: B006
        max_new_tokens: int = 24,
        length_normalise: bool = False,
        label_normalisation: Literal["vocab", "labels"] = "labels",
        gradient_checkpointing: bool = False,
        shared_prefix_training: bool = False,
        answer_spec: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        from peft import get_peft_model

        from fenlei.pretrained.causal_lm import load_causal_lm

        base = load_causal_lm(pretrained)
        if shared_prefix_training:
            check_shared_prefix_exact(peft_method, lora_dropout, gradient_checkpointing, base.config)
        if gradient_checkpointing:
            base.gradient_checkpointing_enable()
            base.enable_input_require_grads()
        config = build_peft_config(peft_method, lora_r, lora_alpha, lora_dropout, target_modules, num_virtual_tokens)
        self.model = get_peft_model(base, config)
        self.model.train()  # from_pretrained returns eval mode; Lightning 2.6 keeps module modes as found
        self.strict_loading = False  # checkpoints hold the adapter only
        self._tokenizer: Any = None
        self._tallies: dict[str, FieldTally] = {}
        self._prefix_store: tuple[list[int], Any, Any] | None = None  # ids, KV cache, (device, autocast)

    # ---- plumbing ----

    @property
    def spec(self) -> Any:
        from fenlei.answers import AnswerSpec

        if self.hparams.get("answer_spec") is None:
            raise RuntimeError("no answer_spec: train or load with a PromptClassificationDataModule")
        return AnswerSpec.from_dict(self.hparams.answer_spec)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from fenlei.pretrained.causal_lm import load_tokenizer

            self._tokenizer = load_tokenizer(self.hparams.tokenizer_path or self.hparams.pretrained,
                                             option="--model.init_args.tokenizer_path")
        return self._tokenizer

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "answer_spec"):
            self.hparams["answer_spec"] = datamodule.answer_spec.to_dict()
            self._tokenizer = datamodule.tokenizer

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
        if self.training and self.hparams.get("shared_prefix_training"):
            loss = self._shared_prefix_loss(input_ids, attention_mask, labels)
            if loss is not None:
                return loss
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

    def _shared_prefix_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
                            ) -> Optional[torch.Tensor]:
        """``lm_loss`` with the batch's common token prefix encoded once (``shared_prefix_training``), or None when
        the rows share too little or the batch would not fit a sliding window.

        The prefix ends before every row's last prompt token (whose logits predict the first answer token). Its
        batch-1 KV cache, computed with gradients, is repeated over the rows (``repeat_interleave``: its backward
        sums the rows' gradients, as B separate copies would); each row's rest (text, answer) is left-padded after
        it, positions continue at the prefix length, so every real token sees what it sees in the plain path.
        """
        import os.path

        from lightning_modules.label_scoring import _cache_kwarg, sliding_window, tree_attention_supported

        rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask, strict=True)]
        starts = [int((lab != -100).nonzero()[0]) if (lab != -100).any() else len(r) for lab, r in zip(labels, rows, strict=True)]
        prefix = list(os.path.commonprefix(rows))[: min(starts) - 1]
        if len(prefix) < self.MIN_SHARED_PREFIX or not tree_attention_supported(self.model):
            return None
        n, p = len(rows), len(prefix)
        rest = [r[p:] for r in rows]
        width = max(map(len, rest))
        window = sliding_window(self.model)
        if window is not None and p + width >= window:
            return None
        answer_len = int((labels != -100).sum(1).max())
        if answer_len == 0:
            return torch.zeros((), device=input_ids.device)
        device = input_ids.device
        ids = torch.full((n, width), self.tokenizer.pad_token_id or 0, dtype=torch.long, device=device)
        mask = torch.zeros((n, width), dtype=torch.long, device=device)
        targets = torch.full((n, width), -100, dtype=torch.long, device=device)
        for r, (seq, lab, length) in enumerate(zip(rest, labels, attention_mask.sum(1).tolist(), strict=True)):
            ids[r, width - len(seq) :] = torch.tensor(seq, device=device)
            mask[r, width - len(seq) :] = 1
            targets[r, width - len(seq) :] = lab[p:length]
        out = self.model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None)
        cache = out.past_key_values if cache is None else cache  # transformers < 5.24 output name
        cache.batch_repeat_interleave(n)
        positions = (p + mask.cumsum(1) - 1).clamp(min=p)
        full_mask = torch.cat([torch.ones(n, p, dtype=torch.long, device=device), mask], 1)
        keep = answer_len + 1
        logits = self.model(input_ids=ids, attention_mask=full_mask, position_ids=positions, use_cache=True,
                            logits_to_keep=keep, **{_cache_kwarg(self.model): cache}).logits
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                                 targets[:, width - keep + 1 :].flatten(), ignore_index=-100)

    # ---- decoding (AnswerDecoding): its prompt cache must not outlive the weights it was computed with ----

    def train(self, mode: bool = True) -> GenerativeClassifier:
        self.clear_prompt_cache()  # eval() comes through here too: every new evaluation loop starts clean
        return super().train(mode)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.clear_prompt_cache()

    def _run_decoding(self, name: str, batch: dict[str, torch.Tensor], stage: str) -> None:
        tally = self._tallies.setdefault(f"{stage}/{name}", FieldTally())
        start = time.perf_counter()
        if name == "score":
            preds, _ = self.decode_score(batch)
            failed = halluc = torch.zeros_like(preds, dtype=torch.bool)
        elif name == "generate":
            preds, failed, halluc, _ = self.decode_generate(batch)
        else:
            raise ValueError(f"unknown decoding {name!r}; choose score or generate")
        tally.add(preds, batch["targets"].cpu(), failed, halluc, time.perf_counter() - start)

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
        """Under DDP each process decoded its own shard: replace every tally by the union of all processes' tallies,
        so that the metrics, the checkpoint monitor and the written reports cover the whole split. Called from the
        epoch-end hooks, which every process runs, for a fixed list of decodings (a collective must be entered by
        all processes in the same order). Note: a DistributedSampler repeats a few examples to give every process
        the same number of batches."""
        for name in decodings:
            key = f"{stage}/{name}"
            self._tallies[key] = self._tallies.get(key, FieldTally()).gathered()

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
        from lightning_modules.test_report import TestReport

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
        # weights_only=True even for the file this fit just wrote: the path comes from the callback, which a resumed
        # run restores from its checkpoint, and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD only overrides an unset argument.
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
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
