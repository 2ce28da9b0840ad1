"""Tiny random decoder LMs (Llama, Gemma 3) and a word-level tokenizer made here, saved as HF folders.

The vocabulary covers the tiny data of conftest.py, the prompt templates of datamodules.prompt_classification
and JSON punctuation, so prompts tokenize to real ids (unknown words become ``<unk>``, which is fine).
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CLASS_WORDS, FILLER

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
PROMPT_WORDS = [
    "classify", "the", "text", "answer", "with", "json", "allowed", "values", "for", "category", "urgency",
    "label", "high", "low", "billing", "login", "shipping", "bug", "user", "model", "turn", "refund", "invoice",
    "very", "late", "report", "a", "one", "of", "each", "field", "fields", "object", "only", "impact",
    *[str(i) for i in range(16)],
]
PUNCT = list('{}":,.-[]()<>|/\n') + ["?", "!", "'", "=", "_", "*", "#"]


def vocab(extra_words: tuple[str, ...] = ()) -> list[str]:
    """``extra_words``: more whole words (e.g. the label names of a real data set, so they tokenize apart)."""
    words = sorted((set(PROMPT_WORDS) | {w for ws in CLASS_WORDS.values() for w in ws} | set(FILLER)) - set(SPECIALS))
    base = SPECIALS + words + PUNCT
    return base + sorted(set(w.lower() for w in extra_words) - set(base))


def make_tokenizer(chat_template: str | None = None, extra_words: tuple[str, ...] = ()):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = vocab(extra_words)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<bos>", unk_token="<unk>")
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


SIMPLE_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}< {{ m['role'] }} > {{ m['content'] }} | {% endfor %}"
    "{% if add_generation_prompt %}< model > {% endif %}"
)


def tiny_config(kind: str = "llama", vocab_size: int | None = None, sliding_window: int = 16):
    from transformers import Gemma3TextConfig, LlamaConfig

    n = vocab_size or len(vocab())
    common = dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=512, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                  # At std 0.02 a frozen lm_head over hidden size 32 caps the logits near uniform: LoRA could
                  # never make any answer likely. A wider init lets the adapter learn within a unit test.
                  initializer_range=0.3)
    if kind == "llama":
        return LlamaConfig(num_key_value_heads=2, **common)
    if kind == "gemma3":
        return Gemma3TextConfig(num_key_value_heads=1, head_dim=16, sliding_window=sliding_window, **common)
    raise ValueError(kind)


def write_tiny_decoder(directory: Path, kind: str = "llama", seed: int = 0, chat_template: str | None = None,
                       sliding_window: int = 16, extra_words: tuple[str, ...] = ()) -> Path:
    """A random causal LM (hidden 32, 2 layers) and its word-level tokenizer, saved as an HF folder
    (``sliding_window``: Gemma 3's local-attention window; ``extra_words``: see :func:`vocab`)."""
    import torch
    from transformers import AutoModelForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    make_tokenizer(chat_template, extra_words).save_pretrained(directory)
    torch.manual_seed(seed)
    config = tiny_config(kind, vocab_size=len(vocab(extra_words)), sliding_window=sliding_window)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory
