"""User errors: a problem with what the user gave (a data file, a field, an option, a run directory, a bundle).

Every such problem raises a :class:`FenleiError` subclass whose message names the file, line or field. The
``fenlei`` command catches them in one place (:func:`exit_status_of`, called by ``fenlei.commands.main``) and
prints one line, ``fenlei: error: <message>``, with exit status 2: never a traceback. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Optional

USER_ERROR_STATUS = 2


class FenleiError(Exception):
    """Base class of every user error fenlei reports in one line (exit status 2)."""


class OptionError(FenleiError, ValueError):
    """A command-line option whose value cannot work (a batch size under 1, a device this machine lacks)."""


def find_user_error(err: Optional[BaseException]) -> Optional[FenleiError]:
    """The FenleiError behind an exception, if any: jsonargparse and Lightning wrap errors raised while they
    instantiate classes or run hooks."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, FenleiError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def exit_status_of(command: Callable[[], Optional[int]]) -> int:
    """Run ``command``; a user error becomes one line on stderr and status 2. Other exceptions propagate."""
    try:
        status = command()
    except (SystemExit, Exception) as err:  # SystemExit too: jsonargparse exits with the error as its context
        user_error = find_user_error(err)
        if user_error is None:
            raise
        status = report(user_error)
    return 0 if status is None else int(status)


def report(err: FenleiError) -> int:
    message = " ".join(str(err).split("\n"))
    print(f"fenlei: error: {message}", file=sys.stderr)
    return USER_ERROR_STATUS
