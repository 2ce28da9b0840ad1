"""Fixtures for tiny CPU runs: a random 2-layer BERT with a WordPiece tokenizer made here, and small JSONL data.

No test needs the network or packaged weights (except those marked ``slow``).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO_ROOT = Path(__file__).resolve().parent.parent

# Four classes, each with its own words, plus shared filler words: learnable in a few steps, not trivial.
CLASS_WORDS = {
    "billing": ["refund", "invoice", "charge", "payment", "card"],
    "login": ["password", "login", "account", "locked", "reset"],
    "shipping": ["package", "delivery", "courier", "late", "tracking"],
    "bug": ["crash", "error", "broken", "screen", "freeze"],
}
FILLER = ["the", "my", "is", "please", "help", "with", "a", "i", "need", "today", "again", "order"]


def make_vocab() -> list[str]:
    words = sorted({w for ws in CLASS_WORDS.values() for w in ws} | set(FILLER))
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?#")
    pieces = [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *letters, *pieces]


def write_tiny_model(directory: Path, num_layers: int = 2) -> Path:
    """A random BertModel (hidden 32) and a fast WordPiece tokenizer, saved as an ordinary HF folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    # transformers 5 takes the vocabulary itself (``vocab=``); a ``vocab_file=`` argument is silently ignored.
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(make_vocab())}, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(make_vocab()),
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory


def make_rows(n: int, seed: int, labels: list[str] | None = None) -> list[dict]:
    rng = random.Random(seed)
    labels = labels or list(CLASS_WORDS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.sample(CLASS_WORDS[label], 2) + rng.sample(FILLER, rng.randint(2, 8))
        rng.shuffle(words)
        rows.append({"id": i, "text": " ".join(words), "label": label})
    return rows


def fenlei_user_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``fenlei ARGV`` and assert it stops on a user error: exit status 2 and, as the last line on stderr, one
    line ``fenlei: error: ...``, which is returned."""
    from fenlei.commands import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("fenlei: error: "), lines
    return lines[-1]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train (64 rows), validation (16) and test (16) JSONL files with four classes."""
    root = tmp_path_factory.mktemp("tiny_data")
    write_jsonl(root / "train.jsonl", make_rows(64, seed=1))
    write_jsonl(root / "validation.jsonl", make_rows(16, seed=2))
    write_jsonl(root / "test.jsonl", make_rows(16, seed=3))
    return root


@pytest.fixture
def old_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of ``tests/fixtures/layout_v0`` (a run, a numeric run and a bundle of the old layout) as the working
    directory: its run files name the model and data relatively."""
    import shutil

    root = shutil.copytree(REPO_ROOT / "tests" / "fixtures" / "layout_v0", tmp_path / "layout_v0")
    monkeypatch.chdir(root)
    return root


def tiny_overrides(tiny_model: Path, tiny_data: Path, run_dir: Path) -> list[str]:
    """CLI arguments that swap any config's model and data for the tiny ones and keep the run in ``run_dir``."""
    return [
        f"--model.init_args.pretrained={tiny_model}",
        f"--data.init_args.tokenizer={tiny_model}",
        f"--data.init_args.data_dir={tiny_data}",
        "--data.init_args.train_file=train",
        "--data.init_args.val_file=validation",
        "--data.init_args.test_file=test",
        "--data.init_args.text_fields=[text]",
        "--data.init_args.label_field=label",
        "--data.init_args.max_length=32",
        "--data.init_args.batch_size=8",
        f"--trainer.default_root_dir={run_dir}",
        "--trainer.accelerator=cpu",
        "--wandb.mode=disabled",
    ]
