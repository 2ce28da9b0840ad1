"""Where fenlei keeps converted and unpacked weights."""

from __future__ import annotations

import os
from pathlib import Path

from fenlei.errors import FenleiError


def cache_dir() -> Path:
    """Where unpacked packaged models live (``$FENLEI_CACHE`` or ``~/.cache/fenlei``)."""
    return Path(os.environ.get("FENLEI_CACHE", Path.home() / ".cache" / "fenlei"))


class MissingModelPackage(FenleiError, FileNotFoundError):
    """A ``packaged:`` model whose PyPI wheel is not installed; the message names the install command."""


class UnknownPackagedModel(FenleiError, ValueError):
    """A ``packaged:`` name fenlei does not know; the message lists the known ones."""
