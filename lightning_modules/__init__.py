"""LightningModules and the callbacks that act on them."""

from lightning_modules.encoder_classifier import EncoderClassifier
from lightning_modules.numeric_target import BinClassifier, EncoderRegressor, OrdinalRegressor
from lightning_modules.staged_unfreezing import StagedUnfreezing

__all__ = ["BinClassifier", "EncoderClassifier", "EncoderRegressor", "OrdinalRegressor", "StagedUnfreezing"]
