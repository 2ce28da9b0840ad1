"""The encoder hyperparameters are declared once (EncoderModule) and reach every encoder module: in the CLI (flat
keys, EncoderModule's docs, each module's defaults) and in the saved hyperparameters (the same keys as before)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from lightning_modules import (
    BinClassifier,
    DecoderSequenceClassifier,
    EncoderClassifier,
    EncoderRegressor,
    OrdinalRegressor,
)
from lightning_modules.encoder_base import EncoderModule
from lightning_modules.encoder_classifier import ClassificationModule
from losses import FocalLoss

ENCODER_PARAMETERS = [name for name in inspect.signature(EncoderModule.__init__).parameters if name != "self"]
OWN = {EncoderClassifier: ["loss"], BinClassifier: ["loss"], EncoderRegressor: ["target", "loss", "huber_delta", "log_target"],
       OrdinalRegressor: ["method"]}


def _cli_options(cls: type) -> dict[str, tuple[object, str]]:
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "model")
    return {action.dest.removeprefix("model."): (action.default, action.help or "") for action in parser._actions
            if action.dest.startswith("model.") and not action.dest.endswith(".help")}


@pytest.mark.parametrize("cls", list(OWN), ids=lambda c: c.__name__)
def test_cli_lists_every_encoder_parameter_with_its_doc(cls: type) -> None:
    options = _cli_options(cls)
    assert sorted(options) == sorted(ENCODER_PARAMETERS + OWN[cls])
    assert all(help_text for _, help_text in options.values())  # every option is documented
    assert options["lr"] == (5e-5, "Peak learning rate of the encoder's top layer.")
    assert options["pooling"][0] == ("cls" if cls is EncoderClassifier else "mean")  # the numeric modules' default


def test_saved_hyperparameters_are_the_whole_signature(tiny_model: Path) -> None:
    model = OrdinalRegressor(str(tiny_model), num_classes=4, method="corn", lr=1e-3)
    assert list(model.hparams) == [*ENCODER_PARAMETERS, "method"]
    assert model.hparams.pooling == "mean" and model.hparams.lr == 1e-3 and model.hparams.fused_adamw is True
    # A loss given as an object is not a hyperparameter (its weights are in the state dict); None is.
    assert "loss" not in BinClassifier(str(tiny_model), num_classes=4, loss=FocalLoss()).hparams
    assert EncoderClassifier(str(tiny_model), num_classes=3).hparams.loss is None


def test_decoder_and_encoder_classifiers_share_a_base_not_each_other() -> None:
    assert issubclass(EncoderClassifier, ClassificationModule) and issubclass(DecoderSequenceClassifier, ClassificationModule)
    assert not issubclass(DecoderSequenceClassifier, EncoderModule)
    assert not issubclass(EncoderClassifier, DecoderSequenceClassifier)
