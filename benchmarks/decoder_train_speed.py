"""Training speed against a peer (issue 15): fenlei with its speed levers vs a plain HF Trainer + PEFT script
(``benchmarks/hf_peft_peer.py``), on gemma-3-270m LoRA, generative multi-field and sequence classification, in one
run on the same subset.

    flock /tmp/fenlei_cpu.lock .venv/bin/python benchmarks/decoder_train_speed.py                 # Endava tickets
    .venv/bin/python benchmarks/decoder_train_speed.py --smoke                       # plumbing check, seconds

Cells (each a separate process, one after another, so they never share the cores; ``--cells`` picks some):
``fenlei_generative`` (``configs/decoder/gemma3_270m_lora_fast.yaml``), ``peer_generative``, ``fenlei_seqcls``
(``configs/decoder/gemma3_270m_seqcls_fast.yaml``), ``peer_seqcls``; ``--tuned_peer`` adds the peer with
``group_by_length`` and bf16 where native (``peer_tuned_*``), for information.

Fairness: one stratified subset (``benchmarks/decoder_classifiers.py``'s ``write_subset``), every system trains on
all of its train file (fenlei's validation is switched off; the subset's ``validation.jsonl`` is a copy of a few
train rows only so that fenlei holds nothing out), the same prompt text (tested), LoRA r/alpha/dropout/targets, lr,
warmup, epochs, batch size, max length and seed, all read from the fast configs and given to the peer. Samples/s:
train texts x epochs / training-loop seconds (fenlei's ``run_summary.json``, the peer's ``trainer.train()``).
Accuracy on the test file: generative = the first field's accuracy under label scoring with full-vocabulary
normalisation (fenlei ``label_normalisation: vocab``; the peer scores each value's answer text by brute force with
the same rule), every field's accuracy recorded; seqcls = argmax of the head.

Target per task: fenlei >= 2x the plain peer's samples/s, met only if fenlei's accuracy is >= the peer's too and
neither model is collapsed (``top_prediction_share``, the most frequent first-field prediction's share of the test
texts, above 0.9; a cell without the share counts as collapsed).
Writes ``benchmarks/results/decoder_train_speed.json`` (``--smoke``: ``results/smoke/``) atomically after every
cell, with ``machine`` (CPU model and bf16/VNNI/AMX flags) and the precision fenlei actually trained in. Resumable:
a rerun with the same settings and config budgets keeps the finished cells (``--fresh`` redoes them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import SMOKE_WORK, machine, positive_int, results_dir, run_logged, smoke_decoder  # noqa: E402
from benchmarks.decoder_classifiers import DATASETS, write_subset  # noqa: E402
from fenlei.predictions import COLLAPSED_SHARE  # noqa: E402

PYTHON = sys.executable
CONFIGS = {"generative": "configs/decoder/gemma3_270m_lora_fast.yaml", "seqcls": "configs/decoder/gemma3_270m_seqcls_fast.yaml"}
CELLS = ["fenlei_generative", "peer_generative", "fenlei_seqcls", "peer_seqcls"]
TUNED_CELLS = ["peer_tuned_generative", "peer_tuned_seqcls"]
DEFINITION = ("fenlei's train samples/s >= 2x the plain HF Trainer + PEFT peer's, and fenlei's test accuracy (first "
              "field for generative) >= the peer's, neither model collapsed (one prediction for > 90% of test texts)")


def read_yaml(path: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / path).read_text())


def budget(task: str, args: argparse.Namespace) -> dict[str, Any]:
    """The settings both systems train with: the fast config's, with this run's batch, length, epochs and seed."""
    cfg = read_yaml(CONFIGS[task])
    model = cfg["model"]["init_args"]
    return {"lr": model["lr"], "warmup": model.get("warmup", 0.06), "lora_r": model["lora_r"],
            "lora_alpha": model["lora_alpha"], "lora_dropout": model["lora_dropout"],
            "target_modules": model["target_modules"], "epochs": args.epochs, "batch_size": args.batch_size,
            "max_length": args.max_length, "seed": args.seed}


def fenlei_cell(task: str, args: argparse.Namespace, data_dir: Path, work: Path) -> dict[str, Any]:
    import yaml

    from fenlei.training.run_dir import RunDir

    run = work / f"fenlei_{task}"
    b = budget(task, args)
    common = ["--config", CONFIGS[task], f"--trainer.default_root_dir={run}", "--wandb.mode=disabled",
              f"--data.init_args.data_dir={data_dir}", f"--data.init_args.max_length={b['max_length']}",
              f"--data.init_args.batch_size={b['batch_size']}", f"--seed_everything={b['seed']}"]
    if args.model_given:
        common += [f"--model.init_args.pretrained={args.model}", f"--data.init_args.tokenizer={args.model}"]
    if task == "generative":
        preset = DATASETS[args.dataset]
        common += [f"--data.init_args.label_fields={json.dumps(preset['fields'])}",
                   f"--data.init_args.field_names={json.dumps(preset['names'])}"]
    run_logged([PYTHON, "cli.py", "fit", *common, f"--trainer.max_epochs={b['epochs']}",
                "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--checkpoint.save_top_k=0"],
               work / f"fenlei_{task}_fit.log")
    rd = RunDir(run)
    summary = json.loads(rd.summary.read_text())
    test = ["--model.init_args.test_decoding=[score]", "--model.init_args.label_normalisation=vocab"] if task == "generative" else []
    run_logged([PYTHON, "cli.py", "test", *common, *test, f"--ckpt_path={rd.checkpoints / 'last.ckpt'}"],
               work / f"fenlei_{task}_test.log")
    metrics = json.loads(rd.test_metrics.read_text())
    trainer_cfg = yaml.safe_load(rd.config.read_text()).get("trainer", {})
    entry = {"train_samples_per_s": summary["train_samples_per_s"], "train_seconds": summary["train_seconds"],
             "train_samples": summary["train_samples"], "test_accuracy": metrics["test/acc"],
             "precision_used": str(trainer_cfg.get("precision")), "config": CONFIGS[task], "run_dir": str(run)}
    decoding = rd.test / "decoding_metrics.json"
    if task == "generative" and decoding.is_file():
        fields = json.loads(decoding.read_text())["score"]["fields"]
        entry["field_accuracy"] = {name: values["accuracy"] for name, values in fields.items()}
        entry["top_prediction_share"] = next(iter(fields.values())).get("top_prediction_share")
    per_class = rd.test / "per_class.csv"
    if task == "seqcls" and per_class.is_file():
        import csv

        counts = [int(row["predicted"]) for row in csv.DictReader(per_class.open(encoding="utf-8"))]
        entry["top_prediction_share"] = max(counts) / max(sum(counts), 1)
    return entry


def peer_cell(task: str, mode: str, args: argparse.Namespace, data_dir: Path, work: Path) -> dict[str, Any]:
    b = budget(task, args)
    out = work / f"peer_{mode}_{task}.json"
    cmd = [PYTHON, "benchmarks/hf_peft_peer.py", "--task", task, "--mode", mode, "--model", args.model_path,
           "--data_dir", str(data_dir), "--epochs", str(b["epochs"]), "--lr", str(b["lr"]), "--warmup", str(b["warmup"]),
           "--batch_size", str(b["batch_size"]), "--max_length", str(b["max_length"]), "--lora_r", str(b["lora_r"]),
           "--lora_alpha", str(b["lora_alpha"]), "--lora_dropout", str(b["lora_dropout"]), "--seed", str(b["seed"]),
           "--threads", str(args.threads), "--out", str(out), "--target_modules", *b["target_modules"]]
    if task == "generative":
        preset = DATASETS[args.dataset]
        cmd += ["--label_fields", *preset["fields"], "--field_names", *[preset["names"][f] for f in preset["fields"]]]
    run_logged(cmd, work / f"peer_{mode}_{task}.log")
    result = json.loads(out.read_text())
    keep = ("train_samples_per_s", "train_seconds", "train_samples", "test_accuracy", "field_accuracy",
            "top_prediction_share", "scoring")
    return {k: result[k] for k in keep if k in result} | {"mode": mode}


def compare(cells: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task in ("generative", "seqcls"):
        fl, peer = cells.get(f"fenlei_{task}"), cells.get(f"peer_{task}")
        if not fl or not peer:
            continue
        ratio = fl["train_samples_per_s"] / max(peer["train_samples_per_s"], 1e-9)
        # fenlei's accuracies are float32 (0.7 is 0.69999999): compare at 6 digits, where equal counts are equal.
        fl_acc, peer_acc = round(fl["test_accuracy"], 6), round(peer["test_accuracy"], 6)
        shares = {who: cell.get("top_prediction_share") for who, cell in (("fenlei", fl), ("peer", peer))}
        # Unknown (a run from before the share was recorded) is not evidence of learning either.
        collapsed = [who for who, share in shares.items() if share is None or share > COLLAPSED_SHARE]
        out[task] = {"samples_per_s_ratio": round(ratio, 2), "fenlei_samples_per_s": fl["train_samples_per_s"],
                     "peer_samples_per_s": peer["train_samples_per_s"], "fenlei_accuracy": fl_acc,
                     "peer_accuracy": peer_acc, "top_prediction_share": shares, "collapsed_or_unknown": collapsed,
                     "met": bool(ratio >= 2.0 and fl_acc >= peer_acc and not collapsed), "definition": DEFINITION}
        tuned = cells.get(f"peer_tuned_{task}")
        if tuned:
            out[task]["ratio_vs_tuned_peer"] = round(fl["train_samples_per_s"] / max(tuned["train_samples_per_s"], 1e-9), 2)
    return out


LEVERS = {
    "length_grouping": "training batches of similar prompt length (LengthGroupedSampler, seeded); evaluation untouched",
    "adamw_impl": "fused AdamW update (torch.optim.AdamW(fused=True), CPU kernels since torch 2.4)",
    "precision": "bf16-mixed where the CPU has avx512_bf16/amx_bf16, else fp32 (fenlei's rule; see precision_used)",
    "lm_head": "generative: LM head over the answer positions only (logits_to_keep), in every fenlei config",
    "shared_prefix_training": ("generative: the prompt prefix all texts of a batch share encoded once per batch, its "
                               "KV cache repeated over the rows, gradients through it (exact: needs lora_dropout 0)"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="endava")
    p.add_argument("--model", default=None, help="default: the fast configs' packaged:gemma3-270m (--smoke: the tiny "
                   "test decoder)")
    p.add_argument("--train_size", type=positive_int, default=240)
    p.add_argument("--test_size", type=positive_int, default=120)
    p.add_argument("--max_length", type=positive_int, default=64, help="text tokens kept per text")
    p.add_argument("--batch_size", type=positive_int, default=8)
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--cells", nargs="+", choices=CELLS + TUNED_CELLS, default=None, help=f"default: {' '.join(CELLS)}")
    p.add_argument("--tuned_peer", action="store_true", help="also the peer with group_by_length + native bf16")
    p.add_argument("--fresh", action="store_true", help="redo the cells an earlier run with these settings finished")
    p.add_argument("--out", default=None, help="results file (default benchmarks/results/decoder_train_speed.json)")
    p.add_argument("--smoke", action="store_true", help="plumbing check: tiny decoder, 40 train / 16 test texts, "
                   "16 tokens; results in benchmarks/results/smoke/")
    args = p.parse_args()
    if args.smoke:
        args.model = args.model or str(smoke_decoder())
        args.train_size, args.test_size = min(args.train_size, 40), min(args.test_size, 16)
        args.max_length = min(args.max_length, 16)
    args.model_given = args.model is not None
    args.model = args.model or read_yaml(CONFIGS["generative"])["model"]["init_args"]["pretrained"]
    from fenlei.pretrained import resolve_pretrained

    args.model_path = str(resolve_pretrained(args.model))  # the peer loads an HF folder
    cells_wanted = args.cells or CELLS + (TUNED_CELLS if args.tuned_peer else [])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    out = Path(args.out or results_dir(args.smoke) / "decoder_train_speed.json")
    work = (SMOKE_WORK if args.smoke else ROOT / "benchmarks" / "work") / f"decoder_train_speed_{args.dataset}"
    data_dir = work / "data"
    settings = {"dataset": args.dataset, "model": args.model, "train_size": args.train_size,
                "test_size": args.test_size, "max_length": args.max_length, "batch_size": args.batch_size,
                "epochs": args.epochs, "seed": args.seed, "threads": args.threads}
    previous = json.loads(out.read_text()) if out.is_file() and not args.fresh else {}
    budgets = {task: budget(task, args) for task in ("generative", "seqcls")}
    same = previous.get("settings") == settings and previous.get("budget") == budgets  # configs unchanged too
    cells: dict[str, Any] = previous.get("cells", {}) if same else {}
    subset = write_subset(DATASETS[args.dataset]["data"], data_dir, args.train_size, args.test_size, args.seed)
    from fenlei.io import atomic_write_text

    train_lines = (data_dir / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    atomic_write_text(data_dir / "validation.jsonl", "".join(train_lines[:8]))  # never evaluated (see above)
    result: dict[str, Any] = {
        "benchmark": "decoder_train_speed",
        "command": ("" if args.smoke else "flock /tmp/fenlei_cpu.lock ") + ".venv/bin/python benchmarks/decoder_train_speed.py "
                   + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "machine": machine(), "smoke": args.smoke, "settings": settings,
        "budget": budgets, "subset": subset,
        "levers": LEVERS, "cells": cells}

    def save() -> None:
        result["comparison"] = compare(cells)
        atomic_write_text(out, json.dumps(result, indent=1, ensure_ascii=False) + "\n")

    for name in cells_wanted:
        if name in cells:
            print(f"[decoder_train_speed] {name}: kept from the earlier run", flush=True)
            continue
        task = name.rsplit("_", 1)[1]
        if name.startswith("fenlei_"):
            cells[name] = fenlei_cell(task, args, data_dir, work)
        else:
            cells[name] = peer_cell(task, "tuned" if name.startswith("peer_tuned_") else "plain", args, data_dir, work)
        print(f"[decoder_train_speed] {name}: {json.dumps(cells[name])}", flush=True)
        save()
    save()
    print(json.dumps(result["comparison"], indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
