"""Length-grouped sampling: batches of similar-length texts, so dynamic padding wastes little compute.

Random batches of 32 Banking77 texts pad to about 46 tokens although texts average 16: grouping by length cuts
the tokens processed almost 3x. The sampler only orders indices; a plain ``BatchSampler`` cuts them into batches,
which keeps Lightning's distributed wrapping working (each rank takes every n-th index of the same order).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler[int]):
    """Yield indices so that consecutive ``batch_size`` chunks hold texts of similar length, in random batch order.

    Each epoch: shuffle all indices, cut them into mega-batches of ``batch_size * mega_batch_factor``, sort each
    by length (longest first), cut into batches, shuffle the batches (the one partial batch goes last so batch
    boundaries stay aligned). Deterministic for a given ``seed`` and epoch (``set_epoch``), so a resumed run sees
    the same batches as an uninterrupted one.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, mega_batch_factor: int = 50, seed: int = 0) -> None:
        if batch_size < 1 or mega_batch_factor < 1:
            raise ValueError("batch_size and mega_batch_factor must be >= 1")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.mega_batch_size = batch_size * mega_batch_factor
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        batches: list[list[int]] = []
        for start in range(0, len(order), self.mega_batch_size):
            mega = sorted(order[start : start + self.mega_batch_size], key=lambda i: -self.lengths[i])
            batches.extend(mega[i : i + self.batch_size] for i in range(0, len(mega), self.batch_size))
        full = [b for b in batches if len(b) == self.batch_size]
        partial = [b for b in batches if len(b) != self.batch_size]
        shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
        for batch in shuffled + partial:
            yield from batch


def sorted_by_length(lengths: Sequence[int]) -> list[int]:
    """Indices sorted by length, longest first: the evaluation order (padding-minimal, deterministic)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


class FixedOrderSampler(Sampler[int]):
    """A sampler over a precomputed index order (a real ``Sampler`` so Lightning can shard it under DDP)."""

    def __init__(self, order: Sequence[int]) -> None:
        self.order = list(order)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)
