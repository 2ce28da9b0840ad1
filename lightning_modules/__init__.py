"""LightningModules."""

from lightning_modules.encoder_classifier import EncoderClassifier

__all__ = ["EncoderClassifier"]
