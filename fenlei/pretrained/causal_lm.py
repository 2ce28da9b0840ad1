"""Decoder LMs: tokenizer and model loading from a hub id, a folder, a ``.gguf`` file or a ``packaged:`` preset."""

from __future__ import annotations

from typing import Any

from fenlei.pretrained import resolve_pretrained


def load_tokenizer(name: str, padding_side: str = "left") -> Any:
    """Tokenizer of a decoder LM, with a pad token (the EOS token when it has none) and the given padding side."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(name: str, dtype: Any = None, **kwargs: Any) -> Any:
    """``AutoModelForCausalLM`` from a hub id, a folder, a ``.gguf`` file or a ``packaged:`` preset."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(resolve_pretrained(name), dtype=dtype or torch.float32, **kwargs)
