"""Saving a module's constructor arguments as its hyperparameters, the same way whether the CLI or Python built it."""

from __future__ import annotations

import inspect
import types

import lightning.pytorch as pl
from torch import nn


def from_cli() -> bool:
    """True while LightningCLI instantiates the module (it records the given hyperparameters itself)."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    return _given_hyperparameters.get() is not None


def object_arguments(frame: types.FrameType) -> list[str]:
    """Constructor arguments given as ``nn.Module`` objects (e.g. a loss built in Python), in the ``__init__`` of
    ``frame`` and of every subclass ``__init__`` that called it: Lightning would pickle them into ``hparams`` and
    warn; their weights are in the state dict already."""
    from lightning.pytorch.utilities.parsing import collect_init_args

    chain = collect_init_args(frame, [], classes=(pl.LightningModule,))
    return sorted({name for args in chain for name, value in args.items() if isinstance(value, nn.Module)})


def save_constructor_arguments(module: pl.LightningModule) -> None:
    """``save_hyperparameters`` called from an ``__init__``: every argument of it and of the subclass ``__init__``
    calls above it, defaults included. Under the CLI the saved values are the config's (a loss as its
    ``class_path``/``init_args``); from Python, arguments given as modules are left out."""
    here = inspect.currentframe()
    frame = here.f_back if here is not None else None
    if frame is None:
        raise RuntimeError("save_constructor_arguments needs the caller's frame (CPython)")
    module.save_hyperparameters(ignore=None if from_cli() else object_arguments(frame), frame=frame)
