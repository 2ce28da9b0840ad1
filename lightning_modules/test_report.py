"""What a LightningModule hands to the report writers at the end of ``test`` (and of a ``validate`` command).

A module fills ``self.test_report`` in ``on_test_epoch_end`` (and ``self.validation_rows`` in the
``on_validation_epoch_end`` of a ``validate`` command); the callbacks of ``fenlei.training.callbacks`` write them
into the run's ``test/`` (and ``validate/``) folder. The module says what it predicted, the training layer decides
where it goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


@dataclass
class SplitRows:
    """Per-row outputs on one evaluated split, for ``<stage>/predictions.jsonl`` (what ``fenlei report`` reads).

    ``rows``: each output's index into the split's records (evaluation batches are sorted by length, so the order
    is not the file's); ``targets``: gold class ids; ``logits``: ``(N, C)`` class scores before the softmax (any
    per-row shift of them, log-probabilities too, gives the same probabilities at every temperature).
    """

    rows: np.ndarray
    targets: np.ndarray
    logits: np.ndarray
    label_names: Sequence[str]


@dataclass
class TestReport:
    """What a module predicted on the test split, for the report writer.

    ``targets`` and ``predictions`` are class ids (``None`` for no per-class files: then only the metrics and
    the decoding metrics are written); ``metrics`` are the logged test figures (``test/...``), written with
    ``n_examples``; ``decoding_metrics``: a generative classifier's per-decoding results; ``split_rows``: the
    per-row scores, where the module has them (classifiers with logits).
    """

    __test__ = False  # not a pytest test class despite its name

    metrics: dict[str, float]
    targets: Optional[np.ndarray] = None
    predictions: Optional[np.ndarray] = None
    label_names: Optional[Sequence[str]] = None
    decoding_metrics: Optional[dict[str, Any]] = None
    split_rows: Optional[SplitRows] = None
