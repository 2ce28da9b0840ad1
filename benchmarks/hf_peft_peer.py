"""The plain peer of ``benchmarks/decoder_train_speed.py``: an ordinary Hugging Face ``Trainer`` + PEFT script that
trains a decoder LM with LoRA, as a typical user writes it, and reports its training samples/s and test accuracy.

It imports nothing from fenlei: it reads the same JSONL files and rebuilds fenlei's prompt text on its own (the
instruction and answer strings below were copied from ``datamodules/prompt_classification.py`` and
``fenlei/answers.py``; ``tests/test_decoder_train_speed.py`` checks that the prompts are equal for real rows).

Tasks:

* ``generative``: ``AutoModelForCausalLM`` + LoRA (``task_type=CAUSAL_LM``), the causal-LM loss on the answer tokens
  only (``labels`` -100 on the prompt and on padding, ``DataCollatorForSeq2Seq``); the answer is the JSON object of
  every label field, e.g. ``{"category": "4", "urgency": "3"}`` + EOS. The model computes its LM head over every
  position, as ``Trainer`` does. Test accuracy by label scoring: the fields in order, for each the value whose
  answer text up to its closing quote has the highest log-probability under the LM, given the prompt and the values
  chosen before (full-vocabulary softmax: fenlei's ``label_normalisation: vocab``).
* ``seqcls``: ``AutoModelForSequenceClassification`` + LoRA (``task_type=SEQ_CLS``, ``score`` trained in full),
  cross-entropy, ``DataCollatorWithPadding``; test accuracy by argmax.

Modes: ``plain`` (fp32, random batches: the peer of the 2x target) and ``tuned`` (+ ``group_by_length`` and bf16
autocast where the CPU has native bf16).

Samples/s = train texts x epochs / the wall seconds of ``trainer.train()``. The result JSON is written atomically.

    python benchmarks/hf_peft_peer.py --task generative --model DIR --data_dir D --label_fields label urgency \\
        --field_names category urgency --epochs 1 --lr 2e-4 --batch_size 8 --max_length 64 --out peer.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

# Copied from fenlei (datamodules/prompt_classification.py): the instruction and the suffix of plain prompts.
INSTRUCTION = (
    "Classify the text. Answer with a JSON object with the fields {field_list}, each one of the allowed values.\n"
    "{allowed}\nText: {text}"
)
PLAIN_SUFFIX = "\nAnswer:"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def label_sort_key(label: str) -> tuple[Any, ...]:
    """Integer-like labels numerically, then the others alphabetically (the order fenlei lists them in)."""
    try:
        return (0, int(label), label)
    except ValueError:
        return (1, label)


def value_of(row: dict[str, Any], field: str) -> str:
    return str(row[field]).strip()


def field_values(rows: list[dict[str, Any]], fields: list[str]) -> list[list[str]]:
    """The allowed values of every field: its sorted training values."""
    return [sorted({value_of(r, f) for r in rows}, key=label_sort_key) for f in fields]


def has_chat(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def cut_text(tokenizer: Any, text: str, max_length: int) -> str:
    """At most ``max_length`` tokens of the text (the instruction is never cut)."""
    text = text[: max_length * 32]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:max_length]) if len(ids) > max_length else text


def prompt_text(tokenizer: Any, text: str, names: list[str], values: list[list[str]]) -> str:
    allowed = "\n".join(f"{n}: {', '.join(v)}" for n, v in zip(names, values, strict=True))
    body = INSTRUCTION.format(field_list=", ".join(names), allowed=allowed, text=text)
    if has_chat(tokenizer):
        return tokenizer.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                             add_generation_prompt=True)
    return body + PLAIN_SUFFIX


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if has_chat(tokenizer) or tokenizer.bos_token_id is None:  # a chat template writes its own BOS
        return ids
    return [tokenizer.bos_token_id] + ids


def answer_prefix(names: list[str], chosen: list[str]) -> str:
    """The JSON answer up to the opening quote of field ``len(chosen)``'s value."""
    parts = [f'"{n}": "{v}"' for n, v in zip(names, chosen, strict=False)]
    return "{" + ", ".join(parts + [f'"{names[len(chosen)]}": "']) if len(chosen) < len(names) else ""


def answer_text(names: list[str], values: list[str]) -> str:
    return json.dumps(dict(zip(names, values, strict=True)), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------- training


def lora(args: argparse.Namespace, task_type: str) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=args.target_modules, task_type=task_type,
                      modules_to_save=["score"] if task_type == "SEQ_CLS" else None)


def native_bf16() -> bool:
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def warmup_steps(warmup: float, n_train: int, batch_size: int, epochs: int) -> int:
    """Warmup as a step count, rounded down as fenlei rounds it (a fraction below 1 of the optimizer steps;
    transformers would round a ratio up)."""
    total = math.ceil(n_train / batch_size) * epochs
    return int(warmup * total) if warmup < 1 else int(warmup)


def train(model: Any, tokenizer: Any, dataset: list[dict[str, Any]], collator: Any, args: argparse.Namespace) -> float:
    """``Trainer.train()``; returns its wall seconds."""
    from transformers import Trainer, TrainingArguments

    extra: dict[str, Any] = {}
    if args.mode == "tuned":
        extra["train_sampling_strategy"] = "group_by_length"
        extra["bf16"] = native_bf16()
    output_dir = tempfile.mkdtemp(prefix="hf_peft_peer_")
    try:
        training_args = TrainingArguments(
            output_dir=output_dir, num_train_epochs=args.epochs, learning_rate=args.lr, weight_decay=0.0,
            warmup_steps=warmup_steps(args.warmup, len(dataset), args.batch_size, args.epochs),
            lr_scheduler_type="linear", per_device_train_batch_size=args.batch_size, seed=args.seed,
            eval_strategy="no", save_strategy="no", logging_steps=10_000, report_to="none", use_cpu=True,
            remove_unused_columns=False, **extra)
        trainer = Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator,
                          processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def label_scores(model: Any, tokenizer: Any, prompt: list[int], names: list[str], values: list[list[str]]
                 ) -> tuple[list[str], list[list[float]]]:
    """Label scoring of one prompt: per field in order, the value whose answer text through its closing quote has
    the highest log-probability given the prompt and the values chosen before; ``(chosen, scores per field)``."""
    import torch

    chosen: list[str] = []
    all_scores = []
    with torch.no_grad():
        for k in range(len(names)):
            prefix = answer_prefix(names, chosen)
            conts = [list(tokenizer(prefix + v + '"', add_special_tokens=False)["input_ids"]) for v in values[k]]
            # Left-padded, so every candidate ends at the last position: logits of the last `longest + 1`
            # positions only (the 262k-word head over the whole prompt would need gigabytes per field).
            width, keep = len(prompt) + max(map(len, conts)), max(map(len, conts)) + 1
            ids = torch.full((len(conts), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, c in enumerate(conts):
                ids[i, width - len(prompt) - len(c) :] = torch.tensor(prompt + c)
                mask[i, width - len(prompt) - len(c) :] = 1
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
            logp = torch.log_softmax(logits.float(), -1)  # row j predicts the token at width - keep + j + 1
            scores = [float(sum(logp[i, keep - len(c) - 1 + j, t] for j, t in enumerate(c))) for i, c in enumerate(conts)]
            chosen.append(values[k][max(range(len(scores)), key=scores.__getitem__)])
            all_scores.append(scores)
    return chosen, all_scores


def run_generative(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

    data = Path(args.data_dir)
    train_rows, test_rows = read_jsonl(data / "train.jsonl"), read_jsonl(data / "test.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    names = args.field_names or args.label_fields
    values = field_values(train_rows, args.label_fields)

    def encode_prompt(row: dict[str, Any]) -> list[int]:
        return prompt_ids(tokenizer, prompt_text(tokenizer, cut_text(tokenizer, row["text"], args.max_length),
                                                 names, values))

    dataset = []
    for row in train_rows:
        p = encode_prompt(row)
        a = list(tokenizer(answer_text(names, [value_of(row, f) for f in args.label_fields]),
                           add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            a.append(tokenizer.eos_token_id)
        dataset.append({"input_ids": p + a, "attention_mask": [1] * (len(p) + len(a)), "labels": [-100] * len(p) + a})
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = 0
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32),
                           lora(args, "CAUSAL_LM"))
    seconds = train(model, tokenizer, dataset, DataCollatorForSeq2Seq(tokenizer, padding=True), args)

    model.eval()
    correct = [0] * len(names)
    first: list[str] = []
    for row in test_rows:
        chosen = label_scores(model, tokenizer, encode_prompt(row), names, values)[0]
        first.append(chosen[0])
        for k, field in enumerate(args.label_fields):
            correct[k] += chosen[k] == value_of(row, field)
    accuracy = {n: correct[k] / len(test_rows) for k, n in enumerate(names)}
    return {"train_seconds": seconds, "train_texts": len(train_rows), "test_texts": len(test_rows),
            "test_accuracy": accuracy[names[0]], "field_accuracy": accuracy,
            "top_prediction_share": top_share(first),
            "scoring": "label scoring: per field in order, argmax over its values of log p(answer text through the "
                       "value's closing quote | prompt, earlier chosen values) under the full-vocabulary softmax"}


def run_seqcls(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    data = Path(args.data_dir)
    train_rows, test_rows = read_jsonl(data / "train.jsonl"), read_jsonl(data / "test.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    labels = field_values(train_rows, [args.label_fields[0]])[0]
    label_id = {v: i for i, v in enumerate(labels)}
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = 0

    def encode(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        enc = tokenizer([r["text"][: args.max_length * 32] for r in rows], truncation=True, max_length=args.max_length)
        return [{k: v[i] for k, v in enc.items()} for i in range(len(rows))]

    dataset = [{**item, "labels": label_id[value_of(r, args.label_fields[0])]}
               for item, r in zip(encode(train_rows), train_rows, strict=True)]
    base = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(labels), dtype=torch.float32)
    base.config.pad_token_id = tokenizer.pad_token_id
    model = get_peft_model(base, lora(args, "SEQ_CLS"))
    collator = DataCollatorWithPadding(tokenizer)
    seconds = train(model, tokenizer, dataset, collator, args)
    model.eval()
    preds: list[int] = []
    test_items = encode(test_rows)
    with torch.no_grad():
        for start in range(0, len(test_items), args.batch_size):
            batch = collator(test_items[start : start + args.batch_size])
            preds += model(**batch).logits.argmax(-1).tolist()
    truth = [label_id.get(value_of(r, args.label_fields[0]), -1) for r in test_rows]  # unseen in train: wrong
    accuracy = sum(p == t for p, t in zip(preds, truth, strict=True)) / len(truth)
    return {"train_seconds": seconds, "train_texts": len(train_rows), "test_texts": len(test_rows),
            "test_accuracy": accuracy, "top_prediction_share": top_share(preds), "scoring": "argmax of the score head"}


def top_share(predictions: list[Any]) -> float:
    """The share of test texts given the most frequent prediction (a collapsed model answers one value)."""
    return max(Counter(predictions).values()) / len(predictions) if predictions else 0.0


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["generative", "seqcls"], required=True)
    p.add_argument("--model", required=True, help="HF model folder")
    p.add_argument("--data_dir", required=True, help="folder with train.jsonl and test.jsonl")
    p.add_argument("--label_fields", nargs="+", default=["label"], help="generative: every answer field")
    p.add_argument("--field_names", nargs="+", default=None, help="their names in the prompt and answer")
    p.add_argument("--mode", choices=["plain", "tuned"], default="plain")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=float, default=0.06)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_length", type=int, default=64)
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument("--lora_alpha", type=int, default=16)
    p.add_argument("--lora_dropout", type=float, default=0.05)
    p.add_argument("--target_modules", nargs="+",
                   default=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", required=True, help="result JSON path")
    args = p.parse_args(argv)
    if args.field_names and len(args.field_names) != len(args.label_fields):
        p.error("--field_names needs one name per --label_fields entry")
    return args


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, ensure_ascii=False)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch
    import transformers
    from transformers import set_seed

    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)
    result = run_generative(args) if args.task == "generative" else run_seqcls(args)
    samples = result["train_texts"] * args.epochs
    result.update(task=args.task, mode=args.mode, train_samples=samples,
                  train_samples_per_s=round(samples / result["train_seconds"], 3),
                  train_seconds=round(result["train_seconds"], 2), settings=vars(args),
                  torch_threads=torch.get_num_threads(), torch_version=torch.__version__,
                  transformers_version=transformers.__version__)
    write_json_atomic(Path(args.out), result)
    print(f"[hf_peft_peer] {args.task} {args.mode}: {result['train_samples_per_s']} samples/s, "
          f"test accuracy {result['test_accuracy']:.4f}")
    return result


if __name__ == "__main__":
    main()
