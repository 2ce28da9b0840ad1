"""LightningDataModules and the file readers behind them."""

from datamodules.readers import DataError
from datamodules.text_classification import TextClassificationDataModule

__all__ = ["DataError", "TextClassificationDataModule"]
