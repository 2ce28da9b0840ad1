"""The training speed levers (length-grouped prompt batches, AdamW implementations) and the plain HF + PEFT peer of
benchmarks/decoder_train_speed.py: the peer rebuilds fenlei's prompts exactly, without importing fenlei."""

from __future__ import annotations

import ast
import random
import warnings
from pathlib import Path

import pytest
import torch

from benchmarks import hf_peft_peer as peer
from benchmarks.decoder_train_speed import compare
from datamodules.prompt_classification import PromptClassificationDataModule
from datamodules.sampler import EpochRandomSampler, LengthGroupedSampler
from lightning_modules.optim import make_adamw
from tests.conftest import CLASS_WORDS, FILLER, REPO_ROOT, write_jsonl
from tests.decoder_support import SIMPLE_CHAT_TEMPLATE, write_tiny_decoder


def _rows(n: int, seed: int) -> list[dict]:
    """Texts of 1 to 40 words; urgency and impact as JSON integers (codes up to 11, so "2" sorts before "10")."""
    rng = random.Random(seed)
    labels = list(CLASS_WORDS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = [rng.choice(CLASS_WORDS[label])] + rng.choices(FILLER, k=rng.randint(0, 39))
        rows.append({"text": " ".join(words), "label": label, "urgency": i % 3, "impact": [2, 10, 11][i % 3]})
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("speed_data")
    write_jsonl(root / "train.jsonl", _rows(96, 1))
    write_jsonl(root / "validation.jsonl", _rows(8, 2))
    write_jsonl(root / "test.jsonl", _rows(8, 3))
    return root


@pytest.fixture(scope="module", params=[None, SIMPLE_CHAT_TEMPLATE], ids=["plain", "chat"])
def decoder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_decoder(tmp_path_factory.mktemp("speed_decoder"), "llama", chat_template=request.param)


FIELDS, NAMES = ["label", "urgency", "impact"], ["category", "urgency", "impact"]


def _dm(model: Path, data: Path, **kwargs) -> PromptClassificationDataModule:
    args = dict(tokenizer=str(model), data_dir=str(data), label_fields=FIELDS, field_names=dict(zip(FIELDS, NAMES, strict=True)),
                max_length=12, batch_size=8)
    return PromptClassificationDataModule(**(args | kwargs))


def test_peer_prompt_equals_fenlei_prompt(decoder: Path, data: Path) -> None:
    """Text cut to max_length tokens, the allowed values in fenlei's order, the instruction, chat template or plain
    suffix, BOS: the peer's prompt string and ids are fenlei's, row by row."""
    from transformers import AutoTokenizer

    dm = _dm(decoder, data)
    dm.setup("fit")
    tokenizer = AutoTokenizer.from_pretrained(decoder)
    rows = peer.read_jsonl(data / "train.jsonl")
    values = peer.field_values(rows, FIELDS)
    assert values == dm.field_labels and values[2] == ["2", "10", "11"]
    cut = 0
    for i in (0, 1, 5, 17, 40):
        text = peer.cut_text(tokenizer, rows[i]["text"], 12)
        cut += text != rows[i]["text"]
        assert peer.prompt_text(tokenizer, text, NAMES, values) == dm.prompt_text(text)
        assert peer.prompt_ids(tokenizer, peer.prompt_text(tokenizer, text, NAMES, values)) == dm.encode_prompt(rows[i]["text"])
    assert cut  # long texts were cut, short ones kept
    assert peer.answer_text(NAMES, ["bug", "1", "10"]) == '{"category": "bug", "urgency": "1", "impact": "10"}'
    assert peer.answer_prefix(NAMES, []) == '{"category": "'
    assert peer.answer_prefix(NAMES, ["bug", "1"]) == '{"category": "bug", "urgency": "1", "impact": "'


def test_peer_imports_nothing_from_fenlei() -> None:
    tree = ast.parse((REPO_ROOT / "benchmarks" / "hf_peft_peer.py").read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    ours = ("fenlei", "datamodules", "lightning_modules", "losses", "benchmarks", "tests", "cli")
    assert not [n for n in names if n.split(".")[0] in ours]


def _padding(loader) -> int:
    return sum(int((1 - b["prompt_mask"]).sum()) for b in loader)


def test_length_grouped_prompt_batches(data: Path, tmp_path: Path) -> None:
    """Off by default (today's random order); on: every training index once per epoch, less padding than random
    batches, the same batches for the same seed and epoch, other batches in the next epoch; evaluation untouched."""
    model = write_tiny_decoder(tmp_path / "m", "llama")
    plain = _dm(model, data, max_length=64, mega_batch_factor=4)
    grouped = _dm(model, data, max_length=64, length_grouping=True, mega_batch_factor=4)
    again = _dm(model, data, max_length=64, length_grouping=True, mega_batch_factor=4)
    for dm in (plain, grouped, again):
        dm.setup("fit")
    assert isinstance(plain.train_dataloader().sampler, EpochRandomSampler)
    assert isinstance(grouped.train_dataloader().sampler, LengthGroupedSampler)
    batches = [b["index"].tolist() for b in grouped.train_dataloader()]
    assert sorted(i for b in batches for i in b) == list(range(96))
    assert _padding(grouped.train_dataloader()) < 0.5 * _padding(plain.train_dataloader())
    assert batches == [b["index"].tolist() for b in again.train_dataloader()]
    loader = again.train_dataloader()
    loader.sampler.set_epoch(1)
    assert [b["index"].tolist() for b in loader] != batches
    assert [b["index"].tolist() for b in grouped.val_dataloader()] == [b["index"].tolist() for b in plain.val_dataloader()]


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_adamw_implementations_give_the_default_update(impl: str) -> None:
    torch.manual_seed(0)
    weights = [torch.randn(5, 3), torch.randn(7)]
    results = []
    for kind in ("default", impl):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        optimizer = make_adamw(params, lr=1e-2, weight_decay=0.01, impl=kind)
        for step in range(3):
            for p in params:
                p.grad = torch.full_like(p, 0.1 * (step + 1)) + p.detach()
            optimizer.step()
        results.append([p.detach() for p in params])
        if kind != "default":
            assert optimizer.defaults[impl] is True
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_unsupported_adamw_implementation_falls_back_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.optim.AdamW

    def no_fused(params, **kwargs):
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = make_adamw([torch.nn.Parameter(torch.zeros(2))], 1e-3, 0.0, "fused")
    assert not optimizer.defaults.get("fused")
    assert len(caught) == 1 and "adamw_impl fused is not supported here" in str(caught[0].message)
    with pytest.raises(ValueError, match="adamw_impl"):
        make_adamw([torch.nn.Parameter(torch.zeros(2))], 1e-3, 0.0, "apex")  # type: ignore[arg-type]


def test_verdict_needs_speed_and_accuracy() -> None:
    def cells(fl_speed: float, fl_acc: float) -> dict:
        return {"fenlei_seqcls": {"train_samples_per_s": fl_speed, "test_accuracy": fl_acc, "top_prediction_share": 0.5},
                "peer_seqcls": {"train_samples_per_s": 10.0, "test_accuracy": 0.5, "top_prediction_share": 0.5}}

    assert compare(cells(20.0, 0.5))["seqcls"]["met"]
    assert not compare(cells(19.9, 0.9))["seqcls"]["met"]
    assert not compare(cells(40.0, 0.49))["seqcls"]["met"]
    assert compare(cells(40.0, 0.49))["seqcls"]["samples_per_s_ratio"] == 4.0
    assert "generative" not in compare(cells(20.0, 0.5))
    assert compare({"fenlei_seqcls": {"train_samples_per_s": 30.0, "test_accuracy": float(torch.tensor(0.7)),
                                      "top_prediction_share": 0.4},
                    "peer_seqcls": {"train_samples_per_s": 10.0, "test_accuracy": 0.7,
                                    "top_prediction_share": 0.4}})["seqcls"]["met"]  # float32


def test_a_collapsed_or_unrecorded_model_never_meets_the_target() -> None:
    def cells(fl_share: float | None, peer_share: float | None) -> dict:
        return {"fenlei_seqcls": {"train_samples_per_s": 30.0, "test_accuracy": 0.9, "top_prediction_share": fl_share},
                "peer_seqcls": {"train_samples_per_s": 10.0, "test_accuracy": 0.9, "top_prediction_share": peer_share}}

    assert compare(cells(0.9, 0.9))["seqcls"]["met"]  # 90% exactly is not "more than 90%"
    verdict = compare(cells(0.95, 0.5))["seqcls"]
    assert not verdict["met"] and verdict["collapsed_or_unknown"] == ["fenlei"]
    assert compare(cells(0.5, 0.91))["seqcls"]["collapsed_or_unknown"] == ["peer"]
    assert not compare(cells(None, 0.5))["seqcls"]["met"]


def test_the_section_flags_collapse_and_unrecorded_shares() -> None:
    from benchmarks import render

    cells = {"fenlei_seqcls": {"train_samples_per_s": 30.0, "train_seconds": 8.0, "test_accuracy": 0.97,
                               "top_prediction_share": 0.97, "precision_used": "bf16-mixed"},
             "peer_seqcls": {"train_samples_per_s": 10.0, "train_seconds": 24.0, "test_accuracy": 0.5}}
    res = {"benchmark": "decoder_train_speed", "command": "c", "date": "2026-12-03", "machine": {"cpu": {"model": "m"}},
           "settings": {"model": "tiny", "dataset": "endava", "train_size": 240, "test_size": 120, "epochs": 1,
                        "batch_size": 8, "max_length": 64, "seed": 42, "threads": 2},
           "subset": {"train": {"rows": 240, "of": 4000}, "test": {"rows": 100, "of": 1000, "category_counts": {"a": 97, "b": 3}}},
           "cells": cells, "comparison": compare(cells)}
    text = render.render_decoder_train_speed([res], {})
    assert "97.00% **collapsed**" in text and "not recorded (counts as collapsed)" in text
    assert "majority class is 97.00%" in text
    (row,) = render.rows_decoder_train_speed([res], {})
    assert row.met == [False] and "collapsed or share not recorded: fenlei, peer" in row.measured


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_shared_prefix_training_gives_the_same_loss_and_gradients(kind: str, data: Path, tmp_path: Path) -> None:
    """The batch's common prefix encoded once, its cache repeated over the rows: the loss and every LoRA gradient
    equal the per-row computation (random, non-zero LoRA weights so that every gradient is non-trivial)."""
    from lightning_modules.generative_classifier import GenerativeClassifier

    model = write_tiny_decoder(tmp_path / "m", kind, sliding_window=512)
    dm = _dm(model, data, max_length=24)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module = GenerativeClassifier(pretrained=str(model), lora_dropout=0.0, shared_prefix_training=True)
    module._tokenizer = dm.tokenizer
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.2)
    module.train()
    args = (batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert module._shared_prefix_loss(*args) is not None  # the shared path is taken on this batch
    results = []
    for shared in (False, True):
        module.hparams.shared_prefix_training = shared
        module.zero_grad()
        loss = module.lm_loss(*args)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}))
    (plain_loss, plain_grads), (shared_loss, shared_grads) = results
    torch.testing.assert_close(shared_loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert plain_grads.keys() == shared_grads.keys() and all(g.abs().sum() > 0 for g in plain_grads.values())
    for name, grad in plain_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_shared_prefix_training_falls_back_past_a_sliding_window_and_refuses_dropout(data: Path, tmp_path: Path) -> None:
    from lightning_modules.generative_classifier import GenerativeClassifier

    model = write_tiny_decoder(tmp_path / "m", "gemma3", sliding_window=16)
    dm = _dm(model, data, max_length=24)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module = GenerativeClassifier(pretrained=str(model), lora_dropout=0.0, shared_prefix_training=True).train()
    module._tokenizer = dm.tokenizer
    assert module._shared_prefix_loss(batch["input_ids"], batch["attention_mask"], batch["labels"]) is None
    assert torch.isfinite(module.lm_loss(batch["input_ids"], batch["attention_mask"], batch["labels"]))
    with pytest.raises(ValueError, match="lora_dropout is 0.05"):
        GenerativeClassifier(pretrained=str(model), lora_dropout=0.05, shared_prefix_training=True)


def test_peer_label_scores_equal_unpadded_brute_force(tmp_path: Path) -> None:
    """The peer's batched, left-padded scoring (last positions' logits only) gives every value the log-probability
    of its answer text computed alone, without padding; the chosen values feed the next field's prefix."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = write_tiny_decoder(tmp_path / "m", "llama", seed=3)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    values = [["billing", "bug", "login refund"], ["1", "2"]]
    prompt = peer.prompt_ids(tokenizer, peer.prompt_text(tokenizer, "my card again", ["category", "urgency"], values))
    chosen, scores = peer.label_scores(model, tokenizer, prompt, ["category", "urgency"], values)
    for k in range(2):
        prefix = peer.answer_prefix(["category", "urgency"], chosen[:k])
        for value, score in zip(values[k], scores[k], strict=True):
            cont = tokenizer(prefix + value + '"', add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = model(input_ids=torch.tensor([prompt + cont])).logits[0].float().log_softmax(-1)
            expected = sum(float(logp[len(prompt) + j - 1, t]) for j, t in enumerate(cont))
            assert abs(score - expected) < 1e-4, (k, value, score, expected)
        assert chosen[k] == values[k][max(range(len(scores[k])), key=scores[k].__getitem__)]


def test_peer_warmup_rounds_as_fenlei() -> None:
    from lightning_modules.optim import resolve_warmup

    for n, batch, epochs in ((240, 8, 1), (44, 8, 3), (400, 16, 2)):
        total = -(-n // batch) * epochs
        assert peer.warmup_steps(0.06, n, batch, epochs) == resolve_warmup(0.06, total)
    assert peer.warmup_steps(5, 240, 8, 1) == 5


def test_the_peers_top_prediction_share_reaches_the_comparison(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The peer writes its most frequent prediction's share; the cell keeps it, so a learning peer is not counted as
    collapsed-or-unknown (the online_shopping run of 2026-12-03 lost it before this)."""
    import argparse
    import json

    from benchmarks import decoder_train_speed as dts

    def fake_peer(cmd: list[str], log: Path) -> float:
        out = Path(cmd[cmd.index("--out") + 1])
        out.write_text(json.dumps({"train_samples_per_s": 1.0, "train_seconds": 10.0, "train_samples": 10,
                                   "test_accuracy": 0.5, "top_prediction_share": 0.3, "scoring": "x"}))
        return 0.0

    monkeypatch.setattr(dts, "run_logged", fake_peer)
    args = argparse.Namespace(model_path="m", threads=1, dataset="endava", epochs=None, batch_size=None,
                              max_length=None, seed=None)
    monkeypatch.setattr(dts, "budget", lambda task, a: {"epochs": 1, "lr": 1e-4, "warmup": 0.1, "batch_size": 2,
                                                        "max_length": 16, "lora_r": 4, "lora_alpha": 8,
                                                        "lora_dropout": 0.0, "seed": 1, "target_modules": ["q_proj"]})
    cell = dts.peer_cell("seqcls", "plain", args, tmp_path, tmp_path)
    assert cell["top_prediction_share"] == 0.3
    fl = {"train_samples_per_s": 3.0, "test_accuracy": 0.6, "top_prediction_share": 0.25}
    verdict = compare({"fenlei_seqcls": fl, "peer_seqcls": cell})["seqcls"]
    assert verdict["collapsed_or_unknown"] == [] and verdict["met"] is True
