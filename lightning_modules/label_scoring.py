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
prompt is encoded ``num_labels`` times. Both are tested against a brute-force per-label reference.

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

Strategy = Literal["kv_cache", "concat"]


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


def _cache_kwarg(model) -> str:
    """Name of the forward kwarg that takes a KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns and goes in 5.40). Wrappers
    such as PEFT's forward ``**kwargs`` on, so look at the wrapped base model's signature.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
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
    """Per-token label log-probs ``[B, L, T]`` given an encoded prompt batch.

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
) -> torch.Tensor:
    """Log-probability of each label's token sequence after each prompt: ``[batch, num_labels]`` float32.

    ``prompt_ids`` is one prompt (1-D) or a padded batch (2-D) with ``attention_mask`` (left or right padding,
    see the module docstring); ``label_token_ids`` comes from :func:`tokenize_labels`. The score is the SUM of
    the label's token log-probs, i.e. ``log p(label | prompt)``, which is what compares labels of different
    lengths fairly as probabilities. ``length_normalise=True`` divides by the label's token count instead (mean
    log-prob), a common heuristic that stops long labels being penalised for their length but is no longer a
    probability. Labels sharing a first token get the same first-token term and are decided by later tokens.

    Runs under ``no_grad`` and does not switch the model's mode: call ``model.eval()`` first, or dropout makes the
    scores noisy. For training, use the ``[prompt + label]`` layout with a normal LM loss on the label tokens.
    Memory: the cache path materialises logits ``[batch * num_labels, max_label_len - 1, vocab]`` in float32
    (e.g. 8 prompts x 20 labels x 2 x 262k vocab is about 340 MB), so chunk large batches or label sets.
    """
    ids, mask = _as_batch(prompt_ids, attention_mask)
    labels, label_mask = _pad_labels(label_token_ids, ids.device)
    if strategy == "kv_cache":
        token_logp = _score_kv_cache(model, ids, mask, labels, label_mask)
    elif strategy == "concat":
        token_logp = _score_concat(model, ids, mask, labels, label_mask)
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
) -> LabelPrediction:
    """Pick the best-scoring allowed label for each prompt.

    The answer is always one of the given labels (only they are scored), so there is nothing to parse and no
    invalid output. ``log_probs.softmax(-1)`` renormalises over the allowed labels if probabilities are needed.
    """
    scores = score_labels(model, prompt_ids, label_token_ids, length_normalise, attention_mask, strategy)
    return LabelPrediction(scores.argmax(dim=-1), scores)
