"""The export's user error (a FenleiError: ``fenlei`` reports it in one line, exit 2)."""

from __future__ import annotations

from fenlei.errors import FenleiError


class ExportError(FenleiError, RuntimeError):
    """The export cannot go on (bad source, parity gate failed, unreachable threshold); the message says why."""
