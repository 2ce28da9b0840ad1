"""Decoder LMs as classifiers by scoring the allowed label strings (issue 4).

Why score instead of generate: transformers 5 removed constrained beam search (``Constraint``s), and free
generation can produce text that is no label at all. Here every allowed label is a token sequence, and the
classifier's score for a label is ``log p(label tokens | prompt)`` under the LM. Only the allowed labels are
ever scored, so a "hallucinated" label is impossible by construction, and the per-label log-probabilities can
be used as logits (softmax over labels) for metrics and calibration.

Scoring strategy (``strategy="kv_cache"``, the default): the prompt batch is encoded ONCE with
``use_cache=True``; the first label token's log-probability is read off the prompt's last real position; the
prompt KV cache is then repeated ``num_labels`` times (``Cache.batch_repeat_interleave``) and all labels are
scored in ONE further forward over their tokens (minus the last token, whose logits are never needed). Labels of
one token need no second forward at all. ``strategy="concat"`` builds one right-padded batch of
``[prompt + label]`` sequences instead: simpler, and usable for models whose cache cannot be repeated, but the
prompt is encoded ``num_labels`` times. ``strategy="tree"`` (:class:`LabelTree`) appends the labels' prefix tree to
each prompt and scores every label in ONE forward of ``batch`` rows, with a 4-D attention mask (no cache copies;
sdpa or eager attention, prompts within the sliding window); the generative classifier's multi-field decoder is
built on it. All three are tested against a brute-force per-label reference.

Normalisation (``normalisation="vocab"``, the default) gives ``log p(label | prompt)`` under the LM;
``"labels"`` gives the label's log-probability under constrained decoding (each token's softmax taken over the
tokens that continue some allowed label), which the tree strategy computes from the LM head rows of the label
tokens only and without feeding positions that have one allowed continuation.

Padding: prompts may be left- or right-padded (the attention mask says where the real tokens are; both give the
same scores as one-by-one scoring, tested). The cache path re-packs every batch to LEFT padding first, so the
label tokens directly follow each prompt's last real token in the cache; this matters for sliding-window layers
(Gemma 3 local attention), whose cache keeps only the last ``window`` slots - with right padding those would be
pads, and real prompt tokens inside the window would be lost (measured: wrong scores once a row's padding exceeds
the window). Position ids are computed from the mask (``cumsum - 1``), so a real token's position is the same
whatever the padding and the batch, and the label tokens continue at ``prompt_length + t``. The concat path
drops the prompt pads and right-pads ``[prompt + label]``, so it is padding-side independent too.
"""

from __future__ import annotations

import inspect
from typing import Literal, NamedTuple

import torch

Strategy = Literal["kv_cache", "concat", "tree"]
# "vocab": log p(label) under the LM (softmax over the whole vocabulary at every label token).
# "labels": the probability under constrained decoding: at each step the softmax runs over the tokens that continue
# SOME allowed label from there (a prefix with one continuation contributes log 1 = 0).
Normalisation = Literal["vocab", "labels"]


def tokenize_labels(tokenizer, labels: list[str], prefix: str = " ") -> list[list[int]]:
    """Token ids of each label as it follows the prompt: ``tokenizer(prefix + label)`` without special tokens.

    Why the label is tokenized ALONE (with its leading-space prefix) and not as the suffix of ``prompt + label``:
    BPE/SentencePiece merges can cross the prompt/label boundary (a prompt ending in ``":"`` or a space can merge
    with the label's first characters), so the joint suffix depends on the prompt, may not start at the label,
    and would give one label different ids for different prompts - nothing consistent to score or to train on.
    Tokenizing ``prefix + label`` alone gives one fixed id sequence per label; the prompt must then be built to
    END WITHOUT the separating whitespace (e.g. ``"... Category:"``), because the space belongs to the label's
    first token (``" billing"`` -> ``"Ġbilling"``/``"▁billing"``, a different id from ``"billing"``). Use the same
    ids for fine-tuning targets and for scoring, and the model sees exactly what it was trained on.

    SentencePiece tokenizers that add a dummy-prefix ``"▁"`` themselves (Llama 2 / Mistral ``legacy`` style)
    would turn ``" billing"`` into ``["▁", "▁billing"]``: pass ``prefix=""`` for those (check with
    ``tokenizer.convert_ids_to_tokens``). Gemma 3 and byte-level BPE tokenizers (Llama 3, Qwen) add no dummy
    prefix, so the default ``" "`` is right for them.

    Raises ``ValueError`` if a label tokenizes to nothing, or two labels tokenize identically (they could never
    be told apart). Labels sharing a first token are fine: the whole sequence is scored.
    """
    if not labels:
        raise ValueError("no labels given")
    out: list[list[int]] = []
    seen: dict[tuple[int, ...], str] = {}
    for label in labels:
        ids = list(tokenizer(prefix + label, add_special_tokens=False)["input_ids"])
        if not ids:
            raise ValueError(f"label {label!r} tokenizes to no tokens (prefix={prefix!r})")
        key = tuple(ids)
        if key in seen:
            raise ValueError(f"labels {seen[key]!r} and {label!r} tokenize identically to {ids}")
        seen[key] = label
        out.append(ids)
    return out


def _pad_labels(label_token_ids: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad the label id lists into ``[num_labels, T]`` ids (pad id 0, never scored) and a 0/1 mask."""
    if not label_token_ids or any(len(ids) == 0 for ids in label_token_ids):
        raise ValueError("every label needs at least one token")
    longest = max(len(ids) for ids in label_token_ids)
    ids = torch.zeros(len(label_token_ids), longest, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(label_token_ids):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long, device=device)
        mask[i, : len(seq)] = 1
    return ids, mask


def _as_batch(prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if prompt_ids.dim() == 1:
        prompt_ids = prompt_ids.unsqueeze(0)
        if attention_mask is not None:
            attention_mask = attention_mask.unsqueeze(0)
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be 1-D or 2-D, got shape {tuple(prompt_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(prompt_ids)
    attention_mask = attention_mask.to(device=prompt_ids.device, dtype=torch.long)
    if attention_mask.shape != prompt_ids.shape:
        raise ValueError("attention_mask must have the shape of prompt_ids")
    if (attention_mask.sum(dim=1) == 0).any():
        raise ValueError("every prompt needs at least one real token")
    return prompt_ids, attention_mask


def _base_model(model):
    """The HF model under a PEFT wrapper (the model itself when unwrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _cache_kwarg(model) -> str:
    """Name of the forward kwarg that takes a KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns and goes in 5.40). Wrappers
    such as PEFT's forward ``**kwargs`` on, so look at the wrapped base model's signature.
    """
    base = _base_model(model)
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _score_kv_cache(
    model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor
) -> torch.Tensor:
    """Per-token label log-probs ``[B, L, T]`` (zeros at label pads): prompt encoded once, labels in one pass."""
    # Re-pack to LEFT padding (a stable sort of the mask moves pads to the front, real tokens keep their order).
    # With right padding the label tokens would follow the pads, and a sliding-window cache layer (Gemma 3 local
    # attention) keeps only the last `window` slots - pads - and drops real prompt tokens still inside the window.
    order = mask.argsort(dim=1, stable=True)
    ids, mask = ids.gather(1, order), mask.gather(1, order)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    lengths = mask.sum(dim=1)  # real prompt tokens per row
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    first_logp = out.logits[:, -1].float().log_softmax(dim=-1)  # [B, V], from each prompt's last real token
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = out.past_key_values  # transformers < 5.24 output name
    return score_after_cache(model, cache, mask, lengths, first_logp, labels, label_mask)


def score_after_cache(
    model, cache, mask: torch.Tensor, lengths: torch.Tensor, first_logp: torch.Tensor, labels: torch.Tensor,
    label_mask: torch.Tensor,
) -> torch.Tensor:
    """Per-token label log-probs ``[B, L, T]`` given an encoded prompt batch (cache repeated per label).

    ``cache`` holds the prompts (``mask``: its 0/1 slots, ``lengths``: real tokens per row, so label token ``t``
    sits at position ``lengths + t``), ``first_logp`` the ``[B, V]`` log-probs after each prompt's last real
    token; ``labels``/``label_mask`` come from ``_pad_labels``. The cache is repeated in place
    (``batch_repeat_interleave``): pass a copy to keep using it. Used by the multi-field decoder, which extends
    one prompt cache field by field instead of re-encoding the prompt.
    """
    batch, num_labels, longest = mask.shape[0], labels.shape[0], labels.shape[1]
    device = mask.device
    token_logp = torch.zeros(batch, num_labels, longest, dtype=torch.float32, device=device)
    token_logp[:, :, 0] = first_logp[:, labels[:, 0]]
    if longest == 1:
        return token_logp
    cache.batch_repeat_interleave(num_labels)  # row b*L + l holds prompt b
    # Feed label tokens 0..T-2; their logits predict tokens 1..T-1 (the last token's logits are never needed).
    step_ids = labels[:, :-1].repeat(batch, 1)  # [B*L, T-1]
    step_mask = label_mask[:, :-1].repeat(batch, 1)
    full_mask = torch.cat([mask.repeat_interleave(num_labels, dim=0), step_mask], dim=1)
    step_pos = lengths.repeat_interleave(num_labels).unsqueeze(1) + torch.arange(longest - 1, device=device)
    step = model(
        input_ids=step_ids,
        attention_mask=full_mask,
        position_ids=step_pos,
        use_cache=True,
        **{_cache_kwarg(model): cache},
    )
    step_logp = step.logits.float().log_softmax(dim=-1)  # [B*L, T-1, V]
    targets = labels[:, 1:].repeat(batch, 1).unsqueeze(-1)
    token_logp[:, :, 1:] = step_logp.gather(-1, targets).squeeze(-1).view(batch, num_labels, longest - 1)
    return token_logp * label_mask.unsqueeze(0)


def _score_concat(
    model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor
) -> torch.Tensor:
    """Per-token label log-probs ``[B, L, T]``: one right-padded batch of ``[real prompt tokens + label]``."""
    batch, num_labels, longest = ids.shape[0], labels.shape[0], labels.shape[1]
    lengths = mask.sum(dim=1)
    label_lens = label_mask.sum(dim=1)
    width = int(lengths.max()) + longest
    seqs = torch.zeros(batch * num_labels, width, dtype=torch.long, device=ids.device)
    seq_mask = torch.zeros_like(seqs)
    for b in range(batch):
        prompt = ids[b][mask[b].bool()]
        for lab in range(num_labels):
            row, n, k = b * num_labels + lab, prompt.shape[0], int(label_lens[lab])
            seqs[row, :n] = prompt
            seqs[row, n : n + k] = labels[lab, :k]
            seq_mask[row, : n + k] = 1
    logp = model(input_ids=seqs, attention_mask=seq_mask).logits.float().log_softmax(dim=-1)
    # Label token t of row r sits at lengths[b] + t and is predicted by the logits one position earlier.
    pred_pos = lengths.repeat_interleave(num_labels).unsqueeze(1) - 1 + torch.arange(longest, device=ids.device)
    rows = torch.arange(batch * num_labels, device=ids.device).unsqueeze(1)
    targets = labels.repeat(batch, 1)
    token_logp = logp[rows, pred_pos.clamp(max=width - 1), targets].view(batch, num_labels, longest)
    return token_logp * label_mask.unsqueeze(0)


@torch.no_grad()
def score_labels(
    model,
    prompt_ids: torch.Tensor,
    label_token_ids: list[list[int]],
    length_normalise: bool = False,
    attention_mask: torch.Tensor | None = None,
    strategy: Strategy = "kv_cache",
    normalisation: Normalisation = "vocab",
) -> torch.Tensor:
    """Log-probability of each label's token sequence after each prompt: ``[batch, num_labels]`` float32.

    ``prompt_ids`` is one prompt (1-D) or a padded batch (2-D) with ``attention_mask`` (left or right padding,
    see the module docstring); ``label_token_ids`` comes from :func:`tokenize_labels`. The score is the SUM of
    the label's token log-probs, i.e. ``log p(label | prompt)``, which is what compares labels of different
    lengths fairly as probabilities. ``length_normalise=True`` divides by the label's token count instead (mean
    log-prob), a common heuristic that stops long labels being penalised for their length but is no longer a
    probability. Labels sharing a first token get the same first-token term and are decided by later tokens.
    ``normalisation="labels"`` renormalises every token's probability over the tokens that continue some allowed
    label at that point (:func:`renormalise_over_labels`): the label's probability under constrained decoding.

    Runs under ``no_grad`` and does not switch the model's mode: call ``model.eval()`` first, or dropout makes the
    scores noisy. For training, use the ``[prompt + label]`` layout with a normal LM loss on the label tokens.
    Memory: the cache path materialises logits ``[batch * num_labels, max_label_len - 1, vocab]`` in float32
    (e.g. 8 prompts x 20 labels x 2 x 262k vocab is about 340 MB), so chunk large batches or label sets.
    """
    ids, mask = _as_batch(prompt_ids, attention_mask)
    labels, label_mask = _pad_labels(label_token_ids, ids.device)
    if normalisation not in ("vocab", "labels"):
        raise ValueError(f"unknown normalisation {normalisation!r}; choose vocab or labels")
    if strategy == "tree":  # normalises itself (the LabelTree computes only what its normalisation needs)
        token_logp = _score_tree(model, ids, mask, LabelTree(label_token_ids, normalisation))
    elif strategy in ("kv_cache", "concat"):
        score = _score_kv_cache if strategy == "kv_cache" else _score_concat
        token_logp = score(model, ids, mask, labels, label_mask)
        if normalisation == "labels":
            token_logp = renormalise_over_labels(token_logp, label_token_ids)
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    scores = token_logp.sum(dim=-1)
    if length_normalise:
        scores = scores / label_mask.sum(dim=1).to(scores.dtype)
    return scores


class LabelPrediction(NamedTuple):
    index: torch.Tensor  # [batch] argmax label index
    log_probs: torch.Tensor  # [batch, num_labels] label scores from score_labels


def predict_labels(
    model,
    prompt_ids: torch.Tensor,
    label_token_ids: list[list[int]],
    length_normalise: bool = False,
    attention_mask: torch.Tensor | None = None,
    strategy: Strategy = "kv_cache",
    normalisation: Normalisation = "vocab",
) -> LabelPrediction:
    """Pick the best-scoring allowed label for each prompt.

    The answer is always one of the given labels (only they are scored), so there is nothing to parse and no
    invalid output. ``log_probs.softmax(-1)`` renormalises over the allowed labels if probabilities are needed.
    """
    scores = score_labels(model, prompt_ids, label_token_ids, length_normalise, attention_mask, strategy,
                          normalisation)
    return LabelPrediction(scores.argmax(dim=-1), scores)


def _continuations(sequences: list[list[int]]) -> dict[tuple[int, ...], list[int]]:
    """Every proper prefix of the label sequences (the empty one too) -> the distinct tokens that follow it."""
    out: dict[tuple[int, ...], list[int]] = {}
    for seq in sequences:
        for t in range(len(seq)):
            nxt = out.setdefault(tuple(seq[:t]), [])
            if seq[t] not in nxt:
                nxt.append(seq[t])
    return out


def renormalise_over_labels(token_logp: torch.Tensor, label_token_ids: list[list[int]]) -> torch.Tensor:
    """Full-vocabulary token log-probs ``[B, L, T]`` -> log-probs renormalised over the allowed continuations.

    Token ``t`` of label ``l`` follows the prefix ``s_l[:t]``; its log-prob is reduced by the logsumexp over the
    distinct tokens that follow that same prefix in some label (each of their full-vocab log-probs sits in the
    entry of a label that takes that branch). A prefix with a single continuation gives 0. Label padding
    (``t >= len(s_l)``) is left as it was.
    """
    kids = _continuations(label_token_ids)
    owner: dict[tuple[tuple[int, ...], int], int] = {}
    for lab, seq in enumerate(label_token_ids):
        for t in range(len(seq)):
            owner.setdefault((tuple(seq[:t]), seq[t]), lab)
    num_labels, longest = token_logp.shape[1], token_logp.shape[2]
    widest = max(map(len, kids.values()))
    index = torch.zeros(num_labels, longest, widest, dtype=torch.long)
    valid = torch.zeros(num_labels, longest, widest, dtype=torch.bool)
    for lab, seq in enumerate(label_token_ids):
        for t in range(len(seq)):
            prefix = tuple(seq[:t])
            for j, tok in enumerate(kids[prefix]):
                index[lab, t, j], valid[lab, t, j] = owner[(prefix, tok)], True
    device = token_logp.device
    steps = torch.arange(longest, device=device).view(1, longest, 1).expand_as(index)
    siblings = token_logp[:, index.to(device), steps]  # [B, L, T, widest]
    valid = valid.to(device)
    log_z = siblings.masked_fill(~valid, float("-inf")).logsumexp(dim=-1)
    return token_logp - torch.where(valid.any(dim=-1), log_z, torch.zeros_like(log_z))


class LabelTree:
    """One field's allowed label sequences as a prefix tree, scored in ONE forward after the prompt.

    Why a tree: the cache path above repeats the prompt's KV cache once per label and runs a forward over
    ``batch * labels`` rows; here each prompt row is extended by the tree's nodes (the labels' proper prefixes,
    shared prefixes once), and a 4-D attention mask lets each node see the prompt and its own ancestors only, as
    in speculative-decoding tree verification. Node ``i`` sits at position ``prompt_length + depth_i - 1``, so its
    logits are exactly those of the label prefix it ends. No cache copy, and one forward per field.

    ``normalisation="vocab"`` feeds every proper prefix and needs full-vocabulary logits at the prompt's last
    token (row 0) and at every node. ``"labels"`` feeds only the prefixes where labels branch (and their
    ancestors); every other step has one allowed continuation, log 1 = 0 under constrained decoding. Its logits
    are needed only for the allowed tokens (``columns``), not the whole vocabulary.

    Memory: the head output is ``[batch, 1 + nodes, len(columns)]`` either way; ``"vocab"`` computes the
    full-vocabulary softmax a few rows at a time (:func:`vocab_logp_at`), so a large label set does not
    materialise ``[batch, nodes, 262k]`` logits at once.
    """

    def __init__(self, label_token_ids: list[list[int]], normalisation: Normalisation = "vocab") -> None:
        if normalisation not in ("vocab", "labels"):
            raise ValueError(f"unknown normalisation {normalisation!r}; choose vocab or labels")
        if not label_token_ids or any(len(ids) == 0 for ids in label_token_ids):
            raise ValueError("a label tree needs at least one label, and every label at least one token")
        self.sequences, self.normalisation = label_token_ids, normalisation
        kids = _continuations(label_token_ids)
        wanted = [p for p, nxt in kids.items() if p and (normalisation == "vocab" or len(nxt) > 1)]
        self.nodes = sorted({p[:d] for p in wanted for d in range(1, len(p) + 1)}, key=lambda p: (len(p), p))
        row = {p: i + 1 for i, p in enumerate(self.nodes)}
        row[()] = 0
        self.tokens = torch.tensor([p[-1] for p in self.nodes], dtype=torch.long)
        self.depth = torch.tensor([len(p) for p in self.nodes], dtype=torch.long)
        self.visible = torch.tensor([[p[: len(q)] == q for q in self.nodes] for p in self.nodes],
                                    dtype=torch.bool).view(len(self.nodes), len(self.nodes))
        # Per label, how many of its tokens are nodes (always its first ones: the fed set is ancestor-closed).
        self.fed_tokens = [sum(tuple(s[:d]) in row for d in range(1, len(s))) for s in label_token_ids]
        self.columns = sorted({tok for s in label_token_ids for tok in s})
        column = {tok: j for j, tok in enumerate(self.columns)}
        longest = max(map(len, label_token_ids))
        shape = (len(label_token_ids), longest)
        self.rows = torch.zeros(shape, dtype=torch.long)  # head-output row that predicts token t of label l
        self.target_columns = torch.zeros(shape, dtype=torch.long)  # its index in ``columns``
        self.scored = torch.zeros(shape, dtype=torch.bool)  # False: padding, or a step with one continuation
        for lab, seq in enumerate(label_token_ids):
            for t, tok in enumerate(seq):
                prefix = tuple(seq[:t])
                if prefix in row:
                    self.rows[lab, t] = row[prefix]
                    self.target_columns[lab, t], self.scored[lab, t] = column[tok], True
        self.allowed = torch.zeros(len(self.nodes) + 1, len(self.columns), dtype=torch.bool)  # [rows, columns]
        for prefix, r in row.items():
            for tok in kids[prefix]:
                self.allowed[r, column[tok]] = True
        self.lengths = torch.tensor([len(s) for s in label_token_ids], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.nodes)

    def token_logp(self, head: torch.Tensor) -> torch.Tensor:
        """``[B, L, T]`` label token log-probs from the head output ``[B, 1 + nodes, len(columns)]`` at the prompt's
        last token and at the nodes, for the tokens in ``columns``: full-vocabulary LOG-PROBS for ``"vocab"``
        (:func:`vocab_logp_at`), raw logits for ``"labels"`` (normalised here over each step's allowed tokens)."""
        device = head.device
        logp = head.float()
        if self.normalisation == "labels":
            logp = logp.masked_fill(~self.allowed.to(device), float("-inf")).log_softmax(dim=-1)
        out = logp[:, self.rows.to(device), self.target_columns.to(device)]  # [B, L, T]
        return out.masked_fill(~self.scored.to(device), 0.0)

    def attention_mask(self, past: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """Boolean ``[B, 1, n + N, P + n + N]`` mask (True = may attend) for one forward over a left-padded block of
        ``n`` ordinary tokens (``block``: its 0/1 mask) followed by the ``N`` nodes, after ``P`` cache slots
        (``past``: 0/1, holes allowed). Block tokens are causal; nodes see the whole block and their ancestors."""
        batch, n, big_p = block.shape[0], block.shape[1], past.shape[1]
        q = n + len(self)
        device = block.device
        mask = torch.zeros(batch, q, big_p + q, dtype=torch.bool, device=device)
        mask[:, :, :big_p] = past.bool().unsqueeze(1)
        causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        mask[:, :n, big_p : big_p + n] = causal & block.bool().unsqueeze(1)
        mask[:, n:, big_p : big_p + n] = block.bool().unsqueeze(1)
        mask[:, n:, big_p + n :] = self.visible.to(device)
        # A pad query is never read, but a row with nothing to attend to would give NaNs: let it see itself.
        idx = torch.arange(q, device=device)
        mask[:, idx, big_p + idx] = True
        return mask.unsqueeze(1)

    def path_mask(self, choice: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` 0/1: the nodes on each row's chosen label (kept in the cache), holes elsewhere."""
        out = torch.zeros(len(choice), len(self), dtype=torch.long)
        for b, c in enumerate(choice.tolist()):
            seq = tuple(self.sequences[c])
            for i, node in enumerate(self.nodes):
                if seq[: len(node)] == node:
                    out[b, i] = 1
        return out


_LOGIT_SCALES = ("logit_scale", "logits_scaling", "output_multiplier_scale")


def _text_config(model):
    """``(HF model, its text config)`` through PEFT wrappers and multimodal configs."""
    base = _base_model(model)
    return base, (base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config)


def sliding_window(model) -> int | None:
    """The model's local-attention window (Gemma 3), or None when every layer attends globally."""
    return getattr(_text_config(model)[1], "sliding_window", None)


def plain_lm_head(model) -> bool:
    """Whether the LM head is a linear layer (+ Gemma's final soft-capping) that :func:`restricted_logits` can
    reproduce; heads that scale logits some other way are left to the model's own forward."""
    _, config = _text_config(model)
    return all(getattr(config, name, None) in (None, 1, 1.0) for name in _LOGIT_SCALES)


def restricted_logits(model, hidden: torch.Tensor, token_ids: list[int] | None = None) -> torch.Tensor:
    """The LM head's logits for ``token_ids`` only (None: every row): ``hidden [..., H] -> [..., len(token_ids)]``.

    Gemma's head has 262k rows; scoring a handful of label tokens needs a handful of them. Applies Gemma's final
    logit soft-capping; heads that scale logits some other way are refused rather than scored wrongly.
    """
    base, config = _text_config(model)
    if not plain_lm_head(model):
        raise NotImplementedError(f"{type(base).__name__} scales its logits; use normalisation='vocab'")
    head = base.get_output_embeddings()
    weight, bias = head.weight, getattr(head, "bias", None)
    if token_ids is not None:
        ids = torch.tensor(token_ids, dtype=torch.long, device=weight.device)
        weight, bias = weight[ids], (bias[ids] if bias is not None else None)
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def vocab_logp_at(model, hidden: torch.Tensor, token_ids: list[int], budget_bytes: int = 2**28) -> torch.Tensor:
    """Full-vocabulary log-probs of ``token_ids`` at every position of ``hidden [B, R, H]`` -> ``[B, R, len]``,
    computing the ``[B, rows, vocab]`` float32 logits a few rows at a time (about ``budget_bytes`` each)."""
    base, _ = _text_config(model)
    vocab = base.get_output_embeddings().weight.shape[0]
    step = max(1, budget_bytes // max(1, hidden.shape[0] * vocab * 4))
    ids = torch.tensor(token_ids, dtype=torch.long, device=hidden.device)
    parts = [restricted_logits(model, hidden[:, i : i + step]).log_softmax(dim=-1)[..., ids]
             for i in range(0, hidden.shape[1], step)]
    return torch.cat(parts, dim=1)


def tree_attention_supported(model) -> bool:
    """Whether the model's attention takes the custom 4-D mask of :func:`extend_with_tree` (sdpa, eager)."""
    return _base_model(model).config._attn_implementation in ("sdpa", "eager")


def extend_with_tree(
    model, tree: LabelTree, ids: torch.Tensor, block_mask: torch.Tensor, cache=None,
    past: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
) -> tuple[object, torch.Tensor]:
    """ONE forward over a left-padded block ``ids`` (``block_mask``: 0/1) followed by ``tree``'s nodes.

    ``cache`` (None: nothing before the block) holds ``past`` slots (0/1, holes allowed) with ``lengths`` real
    tokens per row, the position the block continues at. Returns the extended cache (the block and ALL nodes
    appended: keep the chosen label's nodes with :meth:`LabelTree.path_mask` and mask the rest) and the head
    output ``[B, 1 + nodes, len(tree.columns)]`` at the block's last token and at every node, ready for
    :meth:`LabelTree.token_logp`. Every row's block must end in a real token (left padding). Exact only while the
    whole cache fits every sliding window (the custom mask does not apply the window): callers check.
    """
    device, batch = ids.device, ids.shape[0]
    if past is None:
        past = torch.zeros(batch, 0, dtype=torch.long, device=device)
    if lengths is None:
        lengths = past.sum(dim=1)
    n, nodes = ids.shape[1], len(tree)
    input_ids = torch.cat([ids, tree.tokens.to(device).expand(batch, nodes)], dim=1)
    block_pos = lengths.unsqueeze(1) + (block_mask.cumsum(dim=1) - 1).clamp(min=0)
    node_pos = (lengths + block_mask.sum(dim=1)).unsqueeze(1) + tree.depth.to(device) - 1
    mask = tree.attention_mask(past, block_mask)
    base = _base_model(model)
    if base.config._attn_implementation == "eager":  # eager ADDS the mask to the attention scores
        mask = torch.zeros(mask.shape, device=device).masked_fill(~mask, torch.finfo(torch.float32).min)
    keep = torch.arange(n - 1, n + nodes, device=device)
    kwargs = dict(input_ids=input_ids, attention_mask=mask, position_ids=torch.cat([block_pos, node_pos], dim=1),
                  use_cache=True)
    if cache is not None:
        kwargs[_cache_kwarg(model)] = cache
    if tree.normalisation == "vocab" and not plain_lm_head(model):  # the model's own head, all rows at once
        out = model(**kwargs, logits_to_keep=keep)
        columns = torch.tensor(tree.columns, dtype=torch.long, device=device)
        head = out.logits.float().log_softmax(dim=-1)[..., columns]
    else:  # the decoder's final hidden states, then the LM head (only the label tokens' rows for "labels")
        out = base.get_decoder()(**kwargs)
        hidden = out.last_hidden_state[:, keep]
        if tree.normalisation == "vocab":
            head = vocab_logp_at(model, hidden, tree.columns)
        else:
            head = restricted_logits(model, hidden, tree.columns)
    cache = getattr(out, "cache", None)
    return (cache if cache is not None else out.past_key_values), head


def _score_tree(model, ids: torch.Tensor, mask: torch.Tensor, tree: LabelTree) -> torch.Tensor:
    """Per-token label log-probs ``[B, L, T]``: each prompt and the label tree in one forward, no cache reuse."""
    if not tree_attention_supported(model):
        raise ValueError("strategy='tree' needs sdpa or eager attention; use kv_cache or concat")
    window = sliding_window(model)
    if window is not None and int(mask.sum(dim=1).max()) + len(tree) >= window:
        raise ValueError(f"prompt + label tree exceed the sliding window ({window}); use kv_cache or concat")
    order = mask.argsort(dim=1, stable=True)  # re-pack to left padding: every row ends in a real token
    _, head = extend_with_tree(model, tree, ids.gather(1, order), mask.gather(1, order))
    return tree.token_logp(head)
