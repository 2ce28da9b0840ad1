"""Checkpoint files are read with ``torch.load(weights_only=True)`` on every fenlei path, and a refused one is one
line naming the file.

A checkpoint is a pickle: unpickled with ``weights_only=False`` a crafted one runs code. torch 2.6+ defaults to
``True``, but ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns that default back to ``False`` for every call site that
does not pass the argument (Lightning's ``load_from_checkpoint`` and ``Trainer.fit/test(ckpt_path=...)`` pass
``None`` unless told), so fenlei passes ``True`` explicitly everywhere. fenlei's own checkpoints hold only tensors
and plain values (the RNG states included, see ``callbacks.collect_rng_states``), so nothing legitimate is lost.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

from fenlei.errors import FenleiError

WEIGHTS_ONLY = True


class CheckpointError(FenleiError, RuntimeError):
    """A checkpoint that torch refuses to load with ``weights_only=True`` (it holds pickled objects or code)."""


@contextlib.contextmanager
def refusing_pickled_code(path: str | Path) -> Iterator[None]:
    """Turn torch's weights-only refusal (a long multi-line UnpicklingError) into one CheckpointError naming ``path``."""
    try:
        yield
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"it pickles {found.group(1)}" if found else str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path}: refused to load: {what}; fenlei reads checkpoints with weights_only=True "
                              "(tensors and plain values only), since unpickling anything else can run code") from None
