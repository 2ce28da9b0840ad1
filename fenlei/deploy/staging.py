"""Where an export writes: the ``--out`` check, the lock on its temporary folder, and the clean-up of the temporary
folders that killed exports left behind.

An export builds its bundle in a hidden sibling of ``--out`` (``.NAME.tmp-*``, :func:`fenlei.io.atomic_dir`) and
renames it into place at the end. A killed export (kill -9, out of memory, a power cut) leaves that folder,
hundreds of MB, behind. Each export holds an exclusive ``flock`` on a file inside its folder while it runs; the
kernel drops the lock when the process dies however it dies, so the next export into the same parent can tell a
dead export's folder (lock free) from a live one (lock held) and remove only the former.

``--overwrite`` first moves the old bundle aside (``.NAME.old-*/NAME``) and removes it after the rename; an export
killed in between leaves that folder too, and, killed between the two renames, no ``NAME`` at all. The next export
settles both (:func:`settle_set_aside`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Optional, TypeVar

from fenlei.deploy.errors import ExportError
from fenlei.io import SET_ASIDE_FOLDER, atomic_dir
from fenlei.serving.bundle_check import FORMAT, is_temporary_folder

LOCK_FILE = ".fenlei-export.lock"
# ``--format hf`` folders (fenlei.deploy.hf_export) carry this file with this format marker.
HF_MARKER_FILE = "fenlei_export.json"
HF_FORMAT = "fenlei-hf"
# Folders of exports from before the lock existed: removed only when clearly an export's (its labels.json or raw
# graph) and untouched for this long (no export of that age can still be writing).
UNLOCKED_STALE_SECONDS = 6 * 3600
EXPORT_FILES = ("labels.json", ".model_raw.onnx")


def _marked(folder: Path, name: str, marker: str) -> bool:
    meta = folder / name
    if meta.is_symlink() or not meta.is_file():
        return False
    try:
        content = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(content, dict) and content.get("format") == marker


def is_bundle(folder: Path) -> bool:
    """A folder fenlei wrote as a bundle: its ``metadata.json`` (a regular file inside it) carries the format marker."""
    return _marked(folder, "metadata.json", FORMAT)


def is_hf_folder(folder: Path) -> bool:
    """A folder ``fenlei export --format hf`` wrote: its ``fenlei_export.json`` carries :data:`HF_FORMAT`."""
    return _marked(folder, HF_MARKER_FILE, HF_FORMAT)


def replaceable(out: Path) -> None:
    """``--overwrite`` replaces what an export wrote (a bundle or a ``--format hf`` folder) or an empty folder, and
    nothing else: a folder of the user's files given as ``--out`` by mistake is left untouched. Called before the
    export and again just before the rename."""
    if not out.exists():
        return
    if out.is_symlink() or not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a folder")
    if not is_bundle(out) and not is_hf_folder(out) and any(out.iterdir()):
        raise ExportError(f"--out {out}: exists and is not a fenlei bundle (no metadata.json with format {FORMAT!r}) "
                          f"or --format hf folder (no {HF_MARKER_FILE}); --overwrite replaces only those, so nothing "
                          "was deleted: choose another --out")


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ExportError(f"--out {out}: already exists (pass --overwrite to replace it)")
    replaceable(out)


def _try_lock(path: Path) -> Optional[IO[bytes]]:
    """The open lock file, locked exclusively, or None if another process holds it (or it vanished)."""
    try:
        handle = path.open("rb")
    except OSError:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _stale_unlocked(folder: Path, now: float) -> bool:
    try:
        age = now - folder.stat().st_mtime
    except OSError:
        return False
    return age > UNLOCKED_STALE_SECONDS and any((folder / name).exists() for name in EXPORT_FILES)


def _lock_held(path: Path) -> Optional[bool]:
    """Whether a live process holds the lock file ``path``; None when there is no lock file."""
    if not path.is_file():
        return None
    handle = _try_lock(path)
    if handle is None:
        return True  # held, or renamed away this instant by the export that holds it
    handle.close()
    return False


def _set_aside_by_atomic_dir(folder: Path, name: str) -> bool:
    """``folder`` holds what atomic_dir puts there: nothing yet, or the replaced folder ``name`` (maybe half removed)."""
    entries = list(folder.iterdir())
    if not entries:
        return True
    return len(entries) == 1 and entries[0].name == name and entries[0].is_dir() and not entries[0].is_symlink()


def settle_set_aside(folder: Path, now: float, log: Callable[[str], None]) -> bool:
    """Settle a ``.NAME.old-*`` folder (the bundle ``--overwrite`` replaced) that a killed export left; True when
    it was removed. Left alone: a folder of another shape (not fenlei's), and one whose export may be alive.

    An export for ``NAME`` holds its lock in ``.NAME.tmp-*`` until the rename and in ``NAME`` after it, until the
    old folder is gone: a held lock means alive; free lock files mean its export died. Without any lock file
    (folders of ``fenlei merge``, or of exports from before the lock) only a folder untouched for
    UNLOCKED_STALE_SECONDS counts as dead.

    With ``NAME`` missing, the export died between moving the old bundle aside and renaming the new one into place.
    The old bundle is moved back rather than the new one (its ``.NAME.tmp-*`` folder, removed as any dead export's):
    atomic_dir promises that ``NAME`` is the old folder until the export has finished, and that export never said it
    had; a bundle that vanished would break every ``serve`` of it, and a folder left hidden would never be found."""
    match = SET_ASIDE_FOLDER.match(folder.name)
    if match is None or folder.is_symlink() or not folder.is_dir():
        return False
    name = match["name"]
    parent, target = folder.parent, folder.parent / match["name"]
    if not _set_aside_by_atomic_dir(folder, name):
        return False
    locks = [entry / LOCK_FILE for entry in parent.iterdir()
             if entry.name.startswith(f".{name}.tmp-") and is_temporary_folder(entry) and entry.is_dir()
             and not entry.is_symlink()]
    if target.is_dir() and not target.is_symlink():
        locks.append(target / LOCK_FILE)
    held = [_lock_held(lock) for lock in locks]
    if any(held):
        return False  # a running export
    if all(state is None for state in held):
        try:
            if now - folder.stat().st_mtime <= UNLOCKED_STALE_SECONDS:
                return False
        except OSError:
            return False
    previous = folder / name
    if previous.is_dir() and not target.exists() and not target.is_symlink():
        os.replace(previous, target)
        folder.rmdir()
        log(f"restored {target}, which an export killed while replacing it had moved to {folder}")
        return True
    if (target / LOCK_FILE).is_file() and is_bundle(target):
        # Killed after the rename, before it dropped its lock file from the new bundle: drop it now.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target / LOCK_FILE)
    shutil.rmtree(folder, ignore_errors=True)
    log(f"removed {folder}, the replaced bundle that a killed export had moved aside")
    return True


def clean_stale_temporaries(parent: Path, log: Callable[[str], None]) -> list[Path]:
    """Remove the temporary folders of exports into ``parent`` that died; live exports' folders are left alone.
    The set-aside folders of killed ``--overwrite`` exports are settled first (:func:`settle_set_aside`): whether
    such an export is alive is told by the lock in its temporary folder."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    now = time.time()
    for folder in sorted(parent.iterdir()):
        if settle_set_aside(folder, now, log):
            removed.append(folder)
    for folder in sorted(parent.iterdir()):
        if folder.is_symlink() or not folder.is_dir() or not is_temporary_folder(folder):
            continue
        lock = folder / LOCK_FILE
        if lock.is_file():
            handle = _try_lock(lock)
            if handle is None:
                continue  # a running export
            with handle:
                shutil.rmtree(folder, ignore_errors=True)
        elif _stale_unlocked(folder, now):
            shutil.rmtree(folder, ignore_errors=True)
        else:
            continue
        removed.append(folder)
        log(f"removed {folder}, the temporary folder of an export that did not finish")
    return removed


class ExportLock:
    """The exclusive lock a running export holds on its temporary folder, until after the rename (the folder, lock
    file included, becomes the bundle; the lock file is then removed from it)."""

    def __init__(self) -> None:
        self._handle: Optional[IO[bytes]] = None

    def take(self, tmp: Path) -> None:
        handle = (tmp / LOCK_FILE).open("wb")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        self._handle = handle

    @contextlib.contextmanager
    def held(self, out: Path) -> Iterator[ExportLock]:
        try:
            yield self
        finally:
            if self._handle is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(out / LOCK_FILE)  # only there when the rename happened
                self._handle.close()
                self._handle = None


T = TypeVar("T")


def locked_atomic_dir(out: Path, build: Callable[[Path], T],
                      before_replace: Optional[Callable[[Path], None]] = None) -> T:
    """:func:`fenlei.io.atomic_dir` with the export's lock held on the temporary folder from its first moment until
    the old ``out`` is gone: what every writer of a model folder (export, hf export, merge) uses, so that
    :func:`clean_stale_temporaries` can tell a dead writer's folder from a live one."""
    lock = ExportLock()

    def locked(tmp: Path) -> T:
        lock.take(tmp)  # first: a folder whose lock is free belongs to a dead writer
        return build(tmp)

    with lock.held(out):
        return atomic_dir(out, locked, before_replace=before_replace)
