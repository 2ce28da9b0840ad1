"""Classification losses. Each takes ``(logits, targets)`` and is configured from YAML by ``class_path``."""

from losses.classification import (
    ClassificationLoss,
    CrossEntropyLoss,
    FocalLoss,
    class_weights_from_counts,
    with_class_counts,
)

__all__ = ["ClassificationLoss", "CrossEntropyLoss", "FocalLoss", "class_weights_from_counts", "with_class_counts"]
