"""Atomic file and folder writes: a reader or a killed process never sees a half-written output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

T = TypeVar("T")


def current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


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
    try:
        result = write(tmp)
        umask = current_umask()
        for root, _dirs, files in os.walk(tmp):
            Path(root).chmod(0o777 & ~umask)
            for name in files:
                (Path(root) / name).chmod(0o666 & ~umask)
        old = None
        if before_replace is not None:
            before_replace(directory)
        if directory.exists():
            old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old-"))
            os.replace(directory, old / directory.name)
        os.replace(tmp, directory)
    except BaseException:
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
