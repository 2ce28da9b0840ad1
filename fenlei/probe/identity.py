"""Which model a probe was fitted on: its name and the sha256 of its files, so a saved probe is never applied to
features of another model.

A probe's head is only meaningful on the hidden states of the exact model (weights and tokenizer) it was fitted
on: the same name can hold other weights on another machine (a retrained local folder, another hub revision, a
GGUF dequantized by another converter). The identity is a content digest, not a path or mtime, so a probe moved
to another machine with the same packaged model still loads there.

The digest covers every regular file at the top of the model's folder (config, weights, tokenizer files) by name
and sha256; hidden files and READMEs are left out. A hub id is looked up in the local Hugging Face cache (its
snapshot folder); a hub model that is not cached has no digest and is checked by name only.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any, Optional

from fenlei.io import file_sha256

SKIPPED_PREFIXES = (".", "README")


def model_folder(name: str) -> Optional[Path]:
    """The local folder holding ``name`` (``packaged:...``, a path, a ``.gguf`` file's converted folder, or a hub
    id's cached snapshot), or None where there is none."""
    from fenlei.pretrained import resolve_pretrained

    resolved = Path(resolve_pretrained(name))
    if resolved.is_dir():
        return resolved
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or not a hub id): identified by name only
        return None


@cache
def _folder_digest(folder: Path, stamp: tuple[tuple[str, int, int], ...]) -> str:
    # ``stamp`` (names, sizes, mtimes) only keys this process's memo: the digest itself is of the content.
    digest = hashlib.sha256()
    for name, _size, _mtime in stamp:
        digest.update(f"{name}\0{file_sha256(folder / name)}\n".encode())
    return digest.hexdigest()


def folder_digest(folder: Path) -> str:
    """sha256 over (name, sha256) of every top-level regular file of ``folder``, in name order."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(SKIPPED_PREFIXES))
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _folder_digest(folder.resolve(), stamp)


def model_identity(name: str) -> dict[str, Any]:
    """``{"name": name, "sha256": digest or None}`` of the model a probe is fitted on."""
    folder = model_folder(name)
    return {"name": name, "sha256": folder_digest(folder) if folder is not None else None}


def identity_problem(saved: dict[str, Any], here: dict[str, Any]) -> Optional[str]:
    """Why the model found here is not the one the probe was fitted on, or None when it is (or cannot be told:
    no digest on one side, and the names agree)."""
    if saved.get("sha256") and here.get("sha256"):
        if saved["sha256"] != here["sha256"]:
            return (f"model {here['name']!r} here (files sha256 {here['sha256'][:12]}) is not the model the probe was "
                    f"fitted on ({saved['name']!r}, sha256 {saved['sha256'][:12]}); refit the probe on this model or "
                    "give the original one with --model")
        return None
    if saved.get("name") != here.get("name"):
        return (f"model {here['name']!r} is not the probe's model {saved.get('name')!r} and no file digest is "
                "available to show they are the same; give the probe's model with --model")
    return None
