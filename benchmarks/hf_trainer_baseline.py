"""Plain Hugging Face ``Trainer`` baseline for the fenlei benchmark.

This is deliberately an ordinary, "typical user" Trainer script: it reads a
JSONL text-classification dataset, tokenizes it with ``AutoTokenizer``
(truncation only, dynamic padding through ``DataCollatorWithPadding``),
fine-tunes ``AutoModelForSequenceClassification`` with ``Trainer`` and
evaluates on the test split.

Modes:

* ``plain``: fp32, default optimizer (AdamW), linear schedule, no warmup, no
  weight decay, random sampling; nothing tuned.
* ``tuned``: the same plus ``train_sampling_strategy="group_by_length"`` (the
  transformers 5 replacement for ``group_by_length=True``) and ``bf16=True``
  where the CPU has native bf16 (``avx512_bf16``/``amx_bf16``: fenlei's own
  rule for ``bf16-mixed``; elsewhere bf16 is emulated, several times slower
  than fp32, and no user who measured it would keep it), fp32 otherwise.
  ``precision_used`` in the result says which. bf16 autocast on a machine
  without CUDA also needs ``use_cpu=True``, which transformers demands before
  it allows bf16 on CPU.

Example::

    python benchmarks/hf_trainer_baseline.py --model PATH \\
        --data_dir ../shared/data/banking77 --mode plain --epochs 5 --lr 1e-4 \\
        --batch_size 32 --max_length 64 --seed 42 [--max_steps N] \\
        --out results.json [--output_dir TMPDIR]

The result JSON is written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from fenlei.metrics import macro_f1  # scikit-learn's macro-F1, as every fenlei figure


class EncodedDataset(torch.utils.data.Dataset):
    """A list of tokenized examples (dicts with ``input_ids`` ... and ``labels``)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.items[idx]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file with one ``{"text": ..., "label": ...}`` object per line."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def encode(
    rows: list[dict[str, Any]],
    tokenizer: Any,
    label2id: dict[str, int],
    max_length: int,
) -> EncodedDataset:
    """Tokenize texts (truncation only, no padding) and attach integer labels."""
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
    items = []
    for i, row in enumerate(rows):
        item = {k: v[i] for k, v in enc.items()}
        item["labels"] = label2id[str(row["label"])]
        items.append(item)
    return EncodedDataset(items)


def count_train_samples(
    n_train: int, batch_size: int, epochs: float, max_steps: int | None
) -> int:
    """Number of training samples actually processed (last batch of an epoch may be partial)."""
    steps_per_epoch = math.ceil(n_train / batch_size)
    last_batch = n_train - (steps_per_epoch - 1) * batch_size
    if max_steps is not None and max_steps > 0:
        full_epochs, rem_steps = divmod(max_steps, steps_per_epoch)
        return full_epochs * n_train + rem_steps * batch_size
    full_epochs = int(epochs)
    frac_steps = math.ceil((epochs - full_epochs) * steps_per_epoch)
    extra = 0
    if frac_steps:
        extra = (frac_steps - 1) * batch_size + (
            last_batch if frac_steps == steps_per_epoch else batch_size
        )
    return full_epochs * n_train + extra


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON to ``path`` via a temp file in the same directory + ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        description="Plain Hugging Face Trainer text-classification baseline."
    )
    p.add_argument("--model", required=True, help="HF model folder or hub id")
    p.add_argument(
        "--data_dir", required=True, help="folder with train.jsonl and test.jsonl"
    )
    p.add_argument("--mode", choices=["plain", "tuned"], default="plain")
    p.add_argument("--epochs", type=float, default=5.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--max_steps", type=int, default=None, help="train only N optimizer steps"
    )
    p.add_argument("--out", required=True, help="result JSON path")
    p.add_argument(
        "--output_dir",
        default=None,
        help="Trainer output_dir (default: a temp dir, removed)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run training + test evaluation and write the result JSON."""
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    train_rows = read_jsonl(data_dir / "train.jsonl")
    test_rows = read_jsonl(data_dir / "test.jsonl")

    labels = sorted({str(r["label"]) for r in train_rows})
    label2id = {lab: i for i, lab in enumerate(labels)}
    id2label = {i: lab for lab, i in label2id.items()}
    unseen = {str(r["label"]) for r in test_rows} - set(label2id)
    if unseen:
        raise ValueError(f"test labels not present in train: {sorted(unseen)}")

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train_ds = encode(train_rows, tokenizer, label2id, args.max_length)
    test_ds = encode(test_rows, tokenizer, label2id, args.max_length)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=id2label, label2id=label2id
    )

    tmp_output_dir = None
    output_dir = args.output_dir
    if output_dir is None:
        tmp_output_dir = tempfile.mkdtemp(prefix="hf_trainer_baseline_")
        output_dir = tmp_output_dir

    extra: dict[str, Any] = {}
    if args.mode == "tuned":
        from fenlei.cpu import read_cpu  # the one place the CPU's flags are read (fenlei is installed beside)

        extra = {"train_sampling_strategy": "group_by_length",
                 "bf16": torch.cuda.is_available() or read_cpu().native_bf16 is not False}
        if extra["bf16"] and not torch.cuda.is_available():
            # transformers refuses bf16 without a bf16-capable GPU unless told
            # explicitly to train on CPU (then it uses CPU bf16 autocast).
            extra["use_cpu"] = True

    training_args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps if args.max_steps is not None else -1,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        seed=args.seed,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=100,
        report_to="none",
        **extra,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
    )

    try:
        t0 = time.perf_counter()
        train_output = trainer.train()
        train_time = time.perf_counter() - t0

        pred = trainer.predict(test_ds)
    finally:
        if tmp_output_dir is not None:
            shutil.rmtree(tmp_output_dir, ignore_errors=True)

    y_pred = np.argmax(pred.predictions, axis=-1)
    y_true = pred.label_ids
    train_samples = count_train_samples(
        len(train_ds), args.batch_size, args.epochs, args.max_steps
    )

    result: dict[str, Any] = {
        "mode": args.mode,
        "model": args.model,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "seed": args.seed,
        "max_steps": args.max_steps,
        "train_samples": train_samples,
        "train_time_s": round(train_time, 3),
        "train_samples_per_s": round(train_samples / train_time, 3),
        "trainer_reported_samples_per_s": train_output.metrics.get(
            "train_samples_per_second"
        ),
        "test_accuracy": float(np.mean(y_pred == y_true)),
        "test_macro_f1": macro_f1(y_true, y_pred),
        "precision_used": "bf16-mixed" if extra.get("bf16") else "fp32",
        "torch_threads": torch.get_num_threads(),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    write_json_atomic(Path(args.out), result)
    print(
        f"[hf_trainer_baseline] mode={args.mode} samples={train_samples} "
        f"train_time={train_time:.1f}s samples/s={result['train_samples_per_s']:.1f} "
        f"(trainer {result['trainer_reported_samples_per_s']}) "
        f"acc={result['test_accuracy']:.4f} macro_f1={result['test_macro_f1']:.4f}"
    )
    return result


if __name__ == "__main__":
    main()
