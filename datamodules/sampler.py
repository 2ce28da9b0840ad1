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

    Under DDP, Lightning wraps this sampler and gives rank ``r`` every ``world_size``-th index. The unit that is
    cut and shuffled is therefore a global batch of ``batch_size * world_size`` sorted indices, so every rank's
    batch still holds texts of similar length. Lightning calls ``set_epoch`` only on its wrapper, so an
    ``__iter__`` without a new ``set_epoch`` moves to the next epoch by itself (exact resume under DDP would
    need the epoch from the checkpoint; single-process runs get it through ``set_epoch``).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, mega_batch_factor: int = 50, seed: int = 0) -> None:
        if batch_size < 1 or mega_batch_factor < 1:
            raise ValueError("batch_size and mega_batch_factor must be >= 1")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.mega_batch_size = batch_size * mega_batch_factor
        self.seed = seed
        self.epoch = 0
        self._epoch_was_set = True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._epoch_was_set = True

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        if not self._epoch_was_set:
            self.epoch += 1
        self._epoch_was_set = False
        unit = self.batch_size * _world_size()
        mega_size = max(self.mega_batch_size, unit) // unit * unit
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        batches: list[list[int]] = []
        for start in range(0, len(order), mega_size):
            mega = sorted(order[start : start + mega_size], key=lambda i: -self.lengths[i])
            batches.extend(mega[i : i + unit] for i in range(0, len(mega), unit))
        full = [b for b in batches if len(b) == unit]
        partial = [b for b in batches if len(b) != unit]
        shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
        for batch in shuffled + partial:
            yield from batch


class EpochRandomSampler(Sampler[int]):
    """A random permutation per epoch from ``seed`` and the epoch alone (exact resume, unlike a RandomSampler
    whose generator state advances from epoch to epoch)."""

    def __init__(self, num_items: int, seed: int = 0) -> None:
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


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
