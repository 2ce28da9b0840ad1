"""What a LightningModule hands to the test-report writer at the end of ``test``.

A module fills ``self.test_report`` in ``on_test_epoch_end``; ``fenlei.training.callbacks.TestReportWriter`` writes
it into the run's ``test/`` folder. The module says what it predicted, the training layer decides where it goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


@dataclass
class TestReport:
    """What a module predicted on the test split, for the report writer.

    ``targets`` and ``predictions`` are class ids (``None`` for no per-class files: then only the metrics and
    the decoding metrics are written); ``metrics`` are the logged test figures (``test/...``), written with
    ``n_examples``; ``decoding_metrics``: a generative classifier's per-decoding results.
    """

    __test__ = False  # not a pytest test class despite its name

    metrics: dict[str, float]
    targets: Optional[np.ndarray] = None
    predictions: Optional[np.ndarray] = None
    label_names: Optional[Sequence[str]] = None
    decoding_metrics: Optional[dict[str, Any]] = None
