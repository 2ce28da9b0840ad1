"""Decoder LMs: tokenizer and model loading from a hub id, a folder, a ``.gguf`` file or a ``packaged:`` preset."""

from __future__ import annotations

from typing import Any

from fenlei.pretrained import DECODER_OFFLINE_CHOICE, from_pretrained


def load_tokenizer(name: str, padding_side: str = "left", option: str = "--data.init_args.tokenizer") -> Any:
    """Tokenizer of a decoder LM, with a pad token (the EOS token when it has none) and the given padding side.
    ``option``: the setting that names it, for the message when it cannot be loaded."""
    from transformers import AutoTokenizer

    tokenizer = from_pretrained(AutoTokenizer.from_pretrained, name, option=option, offline_choice=DECODER_OFFLINE_CHOICE)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(name: str, dtype: Any = None, **kwargs: Any) -> Any:
    """``AutoModelForCausalLM`` from a hub id, a folder, a ``.gguf`` file or a ``packaged:`` preset."""
    import torch
    from transformers import AutoModelForCausalLM

    return from_pretrained(AutoModelForCausalLM.from_pretrained, name, offline_choice=DECODER_OFFLINE_CHOICE,
                           dtype=dtype or torch.float32, **kwargs)
