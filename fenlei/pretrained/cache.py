"""Where fenlei keeps converted and unpacked weights."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where unpacked packaged models live (``$FENLEI_CACHE`` or ``~/.cache/fenlei``)."""
    return Path(os.environ.get("FENLEI_CACHE", Path.home() / ".cache" / "fenlei"))
