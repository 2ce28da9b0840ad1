"""Atomic file and folder writes: a reader or a killed process never sees a half-written output."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

T = TypeVar("T")

# atomic_dir moves the folder it replaces into ``.NAME.old-XXXXXXXX/NAME`` (a mkdtemp folder: 8 characters of
# tempfile's alphabet) and removes it after the rename; fenlei.deploy.staging finds what a killed process left there.
SET_ASIDE_INFIX = ".old-"
SET_ASIDE_FOLDER = re.compile(r"^\.(?P<name>.+)\.old-[a-z0-9_]{8}$")


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the kernel reports it (Linux 4.7+): setting it to read it
    would, for that instant, give files that other threads create (W&B's writer, a server) mode 0666/0777."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it; at least fenlei's own readers wait
        mask = os.umask(0o077)  # private for the instant it is set, not world-writable
        os.umask(mask)
    return mask


def share_by_umask(folder: str | Path) -> None:
    """Give ``folder`` and everything in it the modes a plain ``mkdir``/``open`` would (0777/0666 less the umask):
    mkdtemp, mkstemp and safetensors create private 0700/0600 entries, and bundles, adapters and model caches are
    read by other users (teammates, a service account)."""
    umask = current_umask()
    for root, _dirs, files in os.walk(folder):
        Path(root).chmod(0o777 & ~umask)
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                path.chmod(0o666 & ~umask)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then ``os.replace`` it into place.

    The file gets the mode a plain ``open()`` would give (0666 less the umask): mkstemp creates 0600 and
    ``os.replace`` keeps it, which would leave labels and summaries unreadable to teammates on a shared server."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def atomic_dir(directory: str | Path, write: Callable[[Path], T],
               before_replace: Optional[Callable[[Path], None]] = None) -> T:
    """Build a folder with ``write(tmp)`` in a hidden temporary sibling, then rename it to ``directory``; return what
    ``write`` returned. An existing folder is moved aside and removed only after the rename. If ``write`` raises,
    the temporary folder is removed and ``directory`` is left as it was. Permissions follow the umask (mkdtemp and
    mkstemp create private entries; bundles and adapters are read by other users, e.g. a service account).
    ``before_replace(directory)`` runs just before anything at ``directory`` is moved: it may raise to keep what is
    there (a check made before a long ``write`` can be stale by then)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    old: Optional[Path] = None
    try:
        result = write(tmp)
        share_by_umask(tmp)
        if before_replace is not None:
            before_replace(directory)
        if directory.exists():
            old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}{SET_ASIDE_INFIX}"))
            os.replace(directory, old / directory.name)
        os.replace(tmp, directory)
    except BaseException:
        # Interrupted between the two renames (Ctrl-C, a failed rename): put the old folder back, as promised.
        if old is not None and (old / directory.name).exists() and not os.path.lexists(directory):
            os.replace(old / directory.name, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return result


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (checkpoints and GGUF files are hundreds of MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
