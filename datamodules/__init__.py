"""LightningDataModules and the file readers behind them.

``readers`` and ``splits`` are torch-free (the data tools and deployment code import them); the DataModule,
which needs torch and Lightning, is imported on first access.
"""

from typing import Any

from datamodules.readers import DataError

__all__ = ["DataError", "NumericTargetDataModule", "PromptClassificationDataModule", "TextClassificationDataModule"]


def __getattr__(name: str) -> Any:
    if name == "TextClassificationDataModule":
        from datamodules.text_classification import TextClassificationDataModule

        return TextClassificationDataModule
    if name == "NumericTargetDataModule":
        from datamodules.numeric_target import NumericTargetDataModule

        return NumericTargetDataModule
    if name == "PromptClassificationDataModule":
        from datamodules.prompt_classification import PromptClassificationDataModule

        return PromptClassificationDataModule
    raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
