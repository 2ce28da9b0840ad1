"""Decoding a generative classifier's answer: label scoring (constrained or under the LM) and free generation.

``score``: the log-probability of every allowed value (plus its closing quote) after the prompt; the prompt is
encoded once, then one forward per field over the label tree (:mod:`lightning_modules.label_scoring`). Always a
valid label. Several fields are decoded in order, each conditioned on the values chosen for the earlier fields.
``generate``: greedy ``model.generate`` and :func:`fenlei.answers.parse_answer`; unparsable outputs are parse
failures, parsed values outside the label set hallucinations.
"""

from __future__ import annotations

from typing import Any

import torch

from fenlei.answers import AnswerSpec, parse_answer
from lightning_modules.label_scoring import score_labels


def _left_pad(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for r, seq in enumerate(rows):
        ids[r, width - len(seq) :] = torch.tensor(seq, dtype=torch.long, device=device)
        mask[r, width - len(seq) :] = 1
    return ids, mask


class AnswerDecoding:
    """Decoding methods of a LightningModule with ``model`` (the PEFT-wrapped causal LM), ``spec``
    (:class:`~fenlei.answers.AnswerSpec`), ``tokenizer`` and the hparams ``peft_method``, ``label_normalisation``,
    ``length_normalise`` and ``max_new_tokens`` (read at every call, so they can be changed on a trained module).

    The host clears the prompt cache (:meth:`clear_prompt_cache`) whenever its weights may change.
    """

    model: Any
    hparams: Any
    spec: AnswerSpec
    tokenizer: Any
    _prefix_store: tuple[list[int], Any, Any] | None = None  # ids, KV cache, (device, autocast)

    @property
    def scoring_strategy(self) -> str:
        # Prefix tuning injects its own key/value prefixes, which a reused, repeated prompt cache cannot carry.
        return "concat" if self.hparams.peft_method == "prefix" else "kv_cache"

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
