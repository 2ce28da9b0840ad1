"""Label scoring with decoder LMs: tiny random Llama / Gemma 3 models and a word-level tokenizer made here."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lightning_modules.label_scoring import (
    LabelTree,
    predict_labels,
    renormalise_over_labels,
    score_labels,
    tokenize_labels,
    vocab_logp_at,
)

WORDS = [
    "<pad>",
    "<eos>",
    "<unk>",
    "ticket",
    "category",
    ":",
    "my",
    "card",
    "was",
    "charged",
    "twice",
    "please",
    "send",
    "the",
    "pdf",
    "cannot",
    "log",
    "in",
    "billing",
    "refund",
    "invoice",
    "login",
    "problem",
    "shipping",
    "very",
    "late",
    "bug",
    "report",
]
LABELS = ["billing refund", "billing invoice", "login", "shipping very late", "bug"]  # 1, 2 and 3 tokens


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
    )
    return LlamaForCausalLM(cfg).eval()


def _gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(1)
    cfg = Gemma3TextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=64,
        sliding_window=16,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    return Gemma3ForCausalLM(cfg).eval()


def _prompts(tokenizer) -> list[list[int]]:
    texts = [
        "ticket : my card was charged twice category :",
        "please send the pdf category :",
        "cannot log in category :",
        "category :",
    ]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _brute_force(model, prompt: list[int], label_ids: list[list[int]]) -> torch.Tensor:
    """Reference: run the model on each full prompt+label sequence and sum the label tokens' log-softmax."""
    scores = []
    for ids in label_ids:
        seq = torch.tensor([prompt + ids])
        with torch.no_grad():
            logp = model(input_ids=seq).logits[0].float().log_softmax(-1)
        scores.append(sum(logp[len(prompt) - 1 + t, tok] for t, tok in enumerate(ids)))
    return torch.stack(scores)


def _pad(prompts: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        sl = slice(width - len(p), width) if side == "left" else slice(0, len(p))
        ids[i, sl], mask[i, sl] = torch.tensor(p), 1
    return ids, mask


def test_tokenize_labels_lengths_and_shared_prefix(tokenizer):
    ids = tokenize_labels(tokenizer, LABELS)
    assert [len(x) for x in ids] == [2, 2, 1, 3, 1]
    assert ids[0][0] == ids[1][0] and ids[0] != ids[1]


def test_tokenize_labels_rejects_duplicate_and_empty(tokenizer):
    with pytest.raises(ValueError, match="identically"):
        tokenize_labels(tokenizer, ["login", "xyzzy", "plugh"])  # both unknown words -> [<unk>]
    with pytest.raises(ValueError, match="no tokens"):
        tokenize_labels(tokenizer, ["login", "   "])
    with pytest.raises(ValueError, match="identically"):
        tokenize_labels(tokenizer, ["login", "login "])


STRATEGIES = ["kv_cache", "concat", "tree"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("length_normalise", [False, True])
def test_score_matches_brute_force_llama(tokenizer, strategy, length_normalise):
    model, label_ids = _llama(), tokenize_labels(tokenizer, LABELS)
    lengths = torch.tensor([len(x) for x in label_ids], dtype=torch.float32)
    for prompt in _prompts(tokenizer):
        got = score_labels(model, torch.tensor(prompt), label_ids, length_normalise, strategy=strategy)
        want = _brute_force(model, prompt, label_ids)
        if length_normalise:
            want = want / lengths
        assert got.shape == (1, len(LABELS))
        torch.testing.assert_close(got[0], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_score_matches_brute_force_gemma3(tokenizer, strategy):
    model, label_ids = _gemma3(), tokenize_labels(tokenizer, LABELS)
    for prompt in _prompts(tokenizer)[:2]:
        got = score_labels(model, torch.tensor(prompt), label_ids, strategy=strategy)
        torch.testing.assert_close(got[0], _brute_force(model, prompt, label_ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batched_prompts_equal_one_by_one(tokenizer, side, strategy):
    model, label_ids = _llama(), tokenize_labels(tokenizer, LABELS)
    prompts = _prompts(tokenizer)
    ids, mask = _pad(prompts, side)
    batched = score_labels(model, ids, label_ids, attention_mask=mask, strategy=strategy)
    single = torch.cat([score_labels(model, torch.tensor(p), label_ids, strategy=strategy) for p in prompts])
    assert batched.shape == (len(prompts), len(LABELS))
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)


def test_predict_picks_trained_label_including_shared_prefix(tokenizer):
    """Train the tiny LM on "prompt + correct label"; the shared-prefix pair is decided by the second token."""
    model, label_ids = _llama(seed=3), tokenize_labels(tokenizer, LABELS)
    prompts = _prompts(tokenizer)[:3] + [
        tokenizer("ticket : bug report category :", add_special_tokens=False)["input_ids"]
    ]
    gold = [0, 1, 2, 4]  # billing refund, billing invoice (same first token), login, bug
    seqs = [p + label_ids[g] for p, g in zip(prompts, gold, strict=True)]
    ids, mask = _pad(seqs, "right")
    targets = ids.masked_fill(mask == 0, -100)
    for p, row in zip(prompts, targets, strict=True):
        row[: len(p)] = -100  # loss on the label tokens only
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = model(input_ids=ids, attention_mask=mask, labels=targets).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    pids, pmask = _pad(prompts, "left")
    pred = predict_labels(model, pids, label_ids, attention_mask=pmask)
    assert pred.index.tolist() == gold
    assert pred.log_probs.shape == (4, len(LABELS))
    # The two billing labels share their first-token term; the second token separates them.
    assert pred.log_probs[0, 0] > pred.log_probs[0, 1] and pred.log_probs[1, 1] > pred.log_probs[1, 0]
    assert (pred.log_probs <= 0).all()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("strategy", ["kv_cache", "concat"])
def test_gemma3_sliding_window_batched_long_and_short(tokenizer, side, strategy):
    """Prompt longer than the sliding window (16) next to a short one: the short row's padding exceeds the window."""
    model, label_ids = _gemma3(), tokenize_labels(tokenizer, LABELS)
    long_text = (
        "ticket : my card was charged twice please send the pdf cannot log in my card was charged twice again"
        " please send the pdf category :"
    )
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (long_text, "ticket : my card category :")]
    assert len(prompts[0]) - len(prompts[1]) > 16
    ids, mask = _pad(prompts, side)
    got = score_labels(model, ids, label_ids, attention_mask=mask, strategy=strategy)
    want = torch.stack([_brute_force(model, p, label_ids) for p in prompts])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def _constrained_brute_force(model, prompt: list[int], label_ids: list[list[int]]) -> torch.Tensor:
    """Reference for normalisation="labels": each label token's softmax taken over the tokens that follow the same
    prefix in some label, from one full forward per prefix."""
    scores = []
    for ids in label_ids:
        total = torch.tensor(0.0)
        for t, tok in enumerate(ids):
            allowed = sorted({other[t] for other in label_ids if len(other) > t and other[:t] == ids[:t]})
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + ids[:t]])).logits[0, -1].float()
            total = total + logits[allowed].log_softmax(-1)[allowed.index(tok)]
        scores.append(total)
    return torch.stack(scores)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_label_normalisation_matches_constrained_brute_force(tokenizer, strategy, arch):
    """normalisation="labels": every strategy (the tree one from the label tokens' head rows only) gives the
    log-probability under constrained decoding; batched over left-padded prompts."""
    model, label_ids = (_llama() if arch == "llama" else _gemma3()), tokenize_labels(tokenizer, LABELS)
    prompts = _prompts(tokenizer)
    ids, mask = _pad(prompts, "left")
    got = score_labels(model, ids, label_ids, attention_mask=mask, strategy=strategy, normalisation="labels")
    want = torch.stack([_constrained_brute_force(model, p, label_ids) for p in prompts])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert torch.allclose(got.exp().sum(-1), torch.ones(len(prompts)), atol=1e-4)  # a distribution over the labels


def test_label_tree_nodes_and_chosen_paths():
    """Labels a+q, b+q, a+a+q (q = closing token): "vocab" feeds every proper prefix; "labels" only where labels
    branch (after "a": q or a), and a single continuation costs nothing."""
    a, b, q = 5, 6, 7
    labels = [[a, q], [b, q], [a, a, q]]
    full = LabelTree(labels, "vocab")
    assert full.nodes == [(a,), (b,), (a, a)]
    assert full.visible.tolist() == [[True, False, False], [False, True, False], [True, False, True]]
    assert full.fed_tokens == [1, 1, 2] and full.depth.tolist() == [1, 1, 2]
    assert full.path_mask(torch.tensor([2, 1])).tolist() == [[1, 0, 1], [0, 1, 0]]
    lean = LabelTree(labels, "labels")
    assert lean.nodes == [(a,)] and lean.fed_tokens == [1, 0, 1]
    assert lean.scored.tolist() == [[True, True, False], [True, False, False], [True, True, False]]
    with pytest.raises(ValueError, match="normalisation"):
        LabelTree(labels, "softmax")
    for bad in ([], [[a, q], []]):
        with pytest.raises(ValueError, match="at least one"):
            LabelTree(bad)
    # Renormalising full-vocabulary token log-probs: log of (p / sum over the allowed tokens at that step).
    token_logp = torch.log(torch.tensor([[[0.2, 0.5, 0.0], [0.1, 0.9, 0.0], [0.2, 0.25, 0.4]]]))
    got = renormalise_over_labels(token_logp, labels)
    want = torch.log(torch.tensor([[[2 / 3, 2 / 3, 1.0], [1 / 3, 1.0, 1.0], [2 / 3, 1 / 3, 1.0]]]))
    torch.testing.assert_close(got[0, 0, :2], want[0, 0, :2])
    torch.testing.assert_close(got[0, 1, :2], want[0, 1, :2])
    torch.testing.assert_close(got[0, 2], want[0, 2])


def test_tree_strategy_with_eager_attention_and_window_guard(tokenizer):
    """Eager attention takes the tree mask as additive floats; a prompt reaching the sliding window is refused
    (the custom mask does not apply the window) instead of being scored wrongly."""
    model, label_ids = _gemma3(), tokenize_labels(tokenizer, LABELS)
    prompts = _prompts(tokenizer)
    ids, mask = _pad(prompts, "right")
    sdpa = score_labels(model, ids, label_ids, attention_mask=mask, strategy="tree")
    model.config._attn_implementation = "eager"
    try:
        eager = score_labels(model, ids, label_ids, attention_mask=mask, strategy="tree")
    finally:
        model.config._attn_implementation = "sdpa"
    torch.testing.assert_close(eager, sdpa, rtol=1e-4, atol=1e-4)
    long_prompt = tokenizer(" ".join(["ticket : my card was charged twice"] * 3), add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="sliding window"):
        score_labels(model, torch.tensor(long_prompt), label_ids, strategy="tree")


def test_vocab_log_probs_in_row_chunks_and_heads_that_scale_logits(tokenizer):
    """The full-vocabulary softmax is computed a few rows at a time (any chunk size gives the same numbers); a
    model whose config scales logits is scored through its own forward for "vocab" and refused for "labels"."""
    model, label_ids = _llama(), tokenize_labels(tokenizer, LABELS)
    hidden = torch.randn(3, 7, model.config.hidden_size)
    columns = [5, 9, 17]
    whole = model.lm_head(hidden).float().log_softmax(-1)[..., columns]
    for budget in (1, 3 * 64 * 4 * 2, 2**28):  # one row, two rows, everything per chunk
        torch.testing.assert_close(vocab_logp_at(model, hidden, columns, budget_bytes=budget), whole)
    prompt = _prompts(tokenizer)[0]
    model.config.logit_scale = 2.0  # Llama ignores it; fenlei must not apply its own head to such a model
    got = score_labels(model, torch.tensor(prompt), label_ids, strategy="tree")
    torch.testing.assert_close(got[0], _brute_force(model, prompt, label_ids), rtol=1e-4, atol=1e-4)
    with pytest.raises(NotImplementedError, match="scales its logits"):
        score_labels(model, torch.tensor(prompt), label_ids, strategy="tree", normalisation="labels")


def test_tokenize_labels_leading_space_variant():
    """Byte-level pre-tokenisation: " billing" (Ġbilling) and "billing" are different tokens; the prefix picks one."""
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", "billing", "Ġbilling", "Ġrefund", "refund"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    spaced = tokenize_labels(fast, ["billing refund"])
    bare = tokenize_labels(fast, ["billing refund"], prefix="")
    assert spaced == [[vocab["Ġbilling"], vocab["Ġrefund"]]]
    assert bare == [[vocab["billing"], vocab["Ġrefund"]]]


def test_predict_single_prompt_returns_allowed_index(tokenizer):
    model, label_ids = _llama(), tokenize_labels(tokenizer, LABELS)
    pred = predict_labels(model, torch.tensor(_prompts(tokenizer)[0]), label_ids)
    assert pred.index.shape == (1,) and 0 <= int(pred.index) < len(LABELS)
    torch.testing.assert_close(pred.log_probs.softmax(-1).sum(-1), torch.ones(1))
    with pytest.raises(ValueError, match="strategy"):
        score_labels(model, torch.tensor(_prompts(tokenizer)[0]), label_ids, strategy="beam")
