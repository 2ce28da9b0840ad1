"""The training-time metrics (torchmetrics, accumulated across steps and processes) use the same definitions as
the reports, gates and benchmarks (fenlei.metrics, scikit-learn's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fenlei.metrics import macro_f1
from lightning_modules.metrics import classification_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logged_macro_f1_is_fenleis_macro_f1(seed: int) -> None:
    """Seven classes, two of which never occur (neither in targets nor predictions): both drop them."""
    rng = np.random.default_rng(seed)
    targets = rng.choice([0, 1, 2, 4, 5], size=200)
    preds = np.where(rng.random(200) < 0.6, targets, rng.choice([0, 1, 2, 4, 6], size=200))
    logits = torch.full((200, 7), -5.0)
    logits[torch.arange(200), torch.from_numpy(preds)] = 5.0
    metrics = classification_metrics(7, prefix="val/")
    for start in range(0, 200, 64):  # accumulated over batches, as in an epoch
        metrics.update(logits[start:start + 64].softmax(-1), torch.from_numpy(targets[start:start + 64]))
    logged = metrics.compute()
    assert float(logged["val/f1_macro"]) == pytest.approx(macro_f1(targets, preds), abs=1e-6)
    assert float(logged["val/acc"]) == pytest.approx(float(np.mean(preds == targets)), abs=1e-6)


def test_worst_class_f1_is_the_lowest_over_the_test_classes() -> None:
    from fenlei.metrics import worst_class_f1

    # class 0: F1 1.0; class 1: precision 1/2, recall 1/1 -> 2/3; class 2 only predicted: not a test class.
    assert worst_class_f1([0, 0, 1], [0, 0, 1]) == 1.0
    assert abs(worst_class_f1([0, 0, 1, 0], [0, 0, 1, 1]) - 2 / 3) < 1e-9
    assert worst_class_f1([0, 1], [0, 2]) == 0.0  # class 1 never found
    assert worst_class_f1([0, 0, -1], [0, 0, 3]) == 1.0  # a label unseen in training (-1) is not a class here
    assert worst_class_f1([-1], [0]) == 0.0
