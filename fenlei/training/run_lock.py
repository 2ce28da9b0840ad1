"""An exclusive lock on a run directory, so two commands never write into one run at once.

Two ``fit`` s into the same directory used to both exit 0 with their files mixed (the config of one, the checkpoint
and summary of the other, interleaved metrics). The lock is ``flock`` on a file inside the run directory: the
kernel releases it when the holding process ends, however it ends (``kill -9`` included), so a lock file left by a
dead process never blocks the next command; only a live holder does. The file records the holder's pid and command
for the message the second command prints. POSIX only (``fcntl``), as the rest of fenlei's run handling.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

from fenlei.errors import FenleiError


class RunLockedError(FenleiError, RuntimeError):
    """Another live process holds the run directory's lock (reported in one line, exit 2)."""


class RunLock:
    """A held lock; :meth:`release` (or the end of the process) frees it. Not reentrant: the same process taking
    the same directory twice is refused too, since ``flock`` locks belong to an open file, not to a process."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: Optional[int] = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            # Closing the descriptor drops the flock. The file stays: removing it would race with a process that
            # has just opened it and is about to lock it (it would then lock a file nobody else can see).
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def read_holder(path: Path) -> str:
    """``pid N, command`` from a lock file, or ``pid unknown`` (the holder may not have written it yet)."""
    try:
        pid, _, command = path.read_text(encoding="utf-8").strip().partition(" ")
    except OSError:
        return "pid unknown"
    if not pid.isdigit():
        return "pid unknown"
    return f"pid {pid}, {command}" if command else f"pid {pid}"


def acquire(path: Path, command: str, directory_label: Optional[str] = None) -> RunLock:
    """Take the lock in ``path`` (created with its folder if missing) without waiting, and write ``<pid> <command>``
    into it; raise :class:`RunLockedError` naming the holder when a live process has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # 0o666 & ~umask, like any other file fenlei writes: a teammate must be able to read who holds the run.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        where = directory_label or str(path.parent)
        raise RunLockedError(
            f"{where} is in use by another fenlei command ({read_holder(path)}); wait for it to end or write this "
            f"run elsewhere (--trainer.default_root_dir)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    # Written in place, not atomically: replacing the file would give it a new inode the next process locks
    # instead of this one. A reader that catches it half-written gets "pid unknown", nothing worse.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
    return RunLock(path, fd)
