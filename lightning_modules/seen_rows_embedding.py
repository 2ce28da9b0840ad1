"""Train only the word-embedding rows that the training data can reach, with the same result as training all.

A multilingual encoder's vocabulary is mostly rows a monolingual dataset never reads: multilingual-e5-small has
250k x 384 word embeddings (96M of its 118M parameters), and the TNEWS training texts touch 10,270 of them. A row
that no training text contains gets a zero gradient at every step, so AdamW's moments for it stay zero and its only
change is the decoupled weight decay, ``row *= 1 - lr * weight_decay`` per step. Yet the dense gradient, the gradient-norm clip
and AdamW still walk all 96M values every step: on 2 CPU cores that is more than half of the step time.

:class:`SeenRowsEmbedding` stands in for the ``nn.Embedding`` during ``fit``: the reachable rows are one small
trainable parameter, the rest a frozen buffer with the product of the weight-decay factors they would have had
applied when they are read or saved. Training, validation and checkpoints are therefore those of the plain
embedding up to float rounding (tested against it), and the state dict has the plain embedding's single
``weight`` key, so checkpoints load into the ordinary model (test, export, ``load_run``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class SeenRowsEmbedding(nn.Module):
    """``nn.Embedding`` whose trainable rows are ``rows``; the others are frozen and decayed exactly as AdamW would.

    ``original`` keeps its storage: the frozen buffer *is* its weight, so :meth:`restore` only writes the trained
    rows back and hands the ordinary module back.
    """

    def __init__(self, original: nn.Embedding, rows: Iterable[int]) -> None:
        super().__init__()
        self.original = [original]  # a list keeps it out of the module tree (and out of state_dict/parameters)
        self.padding_idx = original.padding_idx
        # nn.Embedding never updates its padding row; neither does this.
        kept = sorted({int(r) for r in rows} - ({self.padding_idx} if self.padding_idx is not None else set()))
        vocab = original.num_embeddings
        if kept and not 0 <= kept[0] <= kept[-1] < vocab:
            raise ValueError(f"token ids outside the vocabulary of {vocab}")
        trainable = original.weight.requires_grad
        original.weight.requires_grad_(False)
        self.register_buffer("weight", original.weight.data)  # shared storage, saved under the plain key
        self.register_buffer("rows", torch.tensor(kept, dtype=torch.long), persistent=False)
        slot = torch.full((vocab,), -1, dtype=torch.long)
        slot[self.rows] = torch.arange(len(kept))
        self.register_buffer("slot", slot, persistent=False)
        self.trainable_rows = nn.Parameter(self.weight[self.rows].clone(), requires_grad=trainable)
        self.pending_decay = 1.0  # product of (1 - lr * weight_decay) not yet applied to the frozen rows

    @property
    def num_embeddings(self) -> int:
        return self.weight.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        slot = self.slot[input_ids]
        trained = F.embedding(slot.clamp(min=0), self.trainable_rows)
        frozen = F.embedding(input_ids, self.weight)
        if self.pending_decay != 1.0:
            frozen = frozen * self.pending_decay
        return torch.where((slot >= 0).unsqueeze(-1), trained, frozen)

    def count_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Call after backward, before the optimizer step: count the decay AdamW applies to every row of a
        parameter that has a gradient."""
        if self.trainable_rows.grad is None:
            return  # frozen this step (staged unfreezing): AdamW skips the whole embedding, as it would here
        for group in optimizer.param_groups:
            if any(p is self.trainable_rows for p in group["params"]):
                self.pending_decay *= 1.0 - group["lr"] * group.get("weight_decay", 0.0)
                return

    @torch.no_grad()
    def sync(self) -> None:
        """Write the pending decay and the trained rows into the full matrix."""
        if self.pending_decay != 1.0:
            self.weight.mul_(self.pending_decay)
            self.pending_decay = 1.0
        self.weight[self.rows] = self.trainable_rows.detach().to(self.weight.dtype)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        self.sync()
        destination[prefix + "weight"] = self.weight if keep_vars else self.weight.detach()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        key = prefix + "weight"
        if key not in state_dict:
            missing_keys.append(key)
            return
        value = state_dict[key]
        if value.shape != self.weight.shape:
            error_msgs.append(f"size mismatch for {key}: copying {tuple(value.shape)} into {tuple(self.weight.shape)}")
            return
        with torch.no_grad():
            self.weight.copy_(value)
            self.trainable_rows.copy_(self.weight[self.rows])
        self.pending_decay = 1.0
        if strict:
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and k != key
                                   and "." not in k[len(prefix):])

    def restore(self) -> nn.Embedding:
        """The ordinary embedding with the trained weights, trainable if the stand-in is now."""
        self.sync()
        original = self.original[0]
        original.weight.requires_grad_(self.trainable_rows.requires_grad)
        return original
