"""LightningModules and the callbacks that act on them."""

from lightning_modules.decoder_seqcls import DecoderSequenceClassifier
from lightning_modules.encoder_classifier import EncoderClassifier
from lightning_modules.generative_classifier import GenerativeClassifier
from lightning_modules.numeric_target import BinClassifier, EncoderRegressor, OrdinalRegressor
from lightning_modules.staged_unfreezing import StagedUnfreezing

__all__ = ["BinClassifier", "DecoderSequenceClassifier", "EncoderClassifier", "EncoderRegressor", "GenerativeClassifier",
           "OrdinalRegressor", "StagedUnfreezing"]
