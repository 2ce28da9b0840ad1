"""Render BENCHMARKS.md from ``benchmarks/results/*.json`` (every figure there comes from a results file).

    python benchmarks/render.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

HEADER = """# Benchmarks

Every number below is read from `benchmarks/results/*.json`, written by the command shown with it, on the
machine and date shown with it. Regenerate this file with `python benchmarks/render.py`.
Speed targets are ratios against a baseline measured in the same run, never absolute timings.
"""


NOTES = {
    "banking77_minilm": """How fenlei gets there (all in `configs/bench/banking77_minilm.yaml` and the default pipeline):
mean pooling (MiniLM's native sentence pooling), a head learning rate of 3e-3 next to the encoder's 1e-4, label
smoothing 0.1, 6% warmup, the embedding block frozen; batches grouped by length, bf16 autocast, fused AdamW, and
the unused BERT pooler dropped. The HF scripts use `AutoModelForSequenceClassification` (CLS pooler head) with
Trainer defaults (fused AdamW as well); the tuned one adds `train_sampling_strategy="group_by_length"` and
`bf16=True` (which on a CPU-only machine also needs `use_cpu=True`).

Caveats: fenlei trains on 90% of train and picks its best epoch on the held-out 10%; the HF scripts train on all
of train and keep the last epoch, so the comparison handicaps fenlei by 10% of the data. The plain HF script
reached 91.66% here, below the 92.5% quoted in the issue for a similar script; we report what this run measured.
The frozen-feature probe (93.0% in the issue) was not re-run here. Each system's accuracy comes from one seed
(42); run-to-run spread was not measured. With the embeddings trained (everything else equal: `python cli.py fit
--config configs/bench/banking77_minilm.yaml --model.init_args.freeze_embeddings=false`, then `test --ckpt_path
best`; same day and machine, not in the results file) fenlei reached 93.57% test accuracy.""",
    "banking77_mpnet": """MPNet-base (110M parameters, 12 x 768) with the MiniLM recipe, 3 epochs at lr 5e-5 (a budget this
2-core CPU finishes in about half an hour); no HF Trainer comparison (the plain script would take hours here).
Published fine-tuned base-size models reach 93.5-94% on Banking77.""",
}


def pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def num(x: Any, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render_banking77(res: dict[str, Any]) -> str:
    rows = []
    labels = {"fenlei": "fenlei", "hf_trainer": "HF Trainer (plain script)", "hf_trainer_tuned": "HF Trainer, group_by_length + bf16"}
    for key, label in labels.items():
        if key not in res:
            continue
        r = res[key]
        runs = ", ".join(num(v) for v in r.get("throughput_runs", []))
        rows.append(f"| {label} | {pct(r['test_accuracy'])} | {pct(r['test_macro_f1'])} | {num(r['train_samples_per_s'])} "
                    f"({runs}) | {num(r.get('full_run_train_s'), 0)} | {r.get('train_examples', '')} |")
    budget = res["budget"]
    out = [f"## {res['benchmark']}",
           "",
           f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; machine: {res['machine'].get('processor') or 'CPU'}, {res['machine']['cpus']} cores, "
           f"{res['machine']['platform']}; config `{res['config']}`.  ",
           f"Budget{' (every system)' if 'hf_trainer' in res else ''}: {budget['epochs']} epochs, lr {budget['lr']}, batch {budget['batch_size']}, "
           f"max_length {budget['max_length']}, seed {budget['seed']}.",
           "",
           "| system | test accuracy | test macro-F1 | train samples/s, median (runs) | full-run train s | trained on |",
           "|---|---|---|---|---|---|",
           *rows,
           ""]
    if "throughput_steps" in res.get("fenlei", {}):
        out.append(f"Throughput: {res['fenlei']['throughput_steps']} training steps per run, validation excluded; "
                   "accuracy: full runs, evaluated on the test split once (fenlei: best epoch on its validation split).")
        out.append("")
    if "ratios" in res:
        ra, tg = res["ratios"], res["targets"]
        out += ["| ratio / target | value | met |", "|---|---|---|",
                f"| throughput vs plain HF Trainer (target >= 2x) | {ra['throughput_vs_hf_trainer']}x | {tg['throughput_ge_2x_hf_trainer']} |",
                f"| throughput vs tuned HF Trainer (target >= 1.1x) | {ra['throughput_vs_hf_trainer_tuned']}x | {tg['throughput_ge_1.1x_hf_trainer_tuned']} |",
                f"| test accuracy >= 93.5% | {pct(res['fenlei']['test_accuracy'])} | {tg['fenlei_test_accuracy_ge_0.935']} |",
                f"| test accuracy >= plain HF Trainer | {ra['accuracy_minus_hf_trainer_pt']:+.2f} pt | {tg['fenlei_accuracy_ge_hf_trainer']} |",
                ""]
    if res["benchmark"] in NOTES:
        out += [NOTES[res["benchmark"]], ""]
    return "\n".join(out)


def main() -> None:
    sections = [HEADER]
    for path in sorted(RESULTS.glob("*.json")):
        res = json.loads(path.read_text())
        if str(res.get("benchmark", "")).startswith("banking77"):
            sections.append(render_banking77(res))
    (ROOT / "BENCHMARKS.md").write_text("\n".join(sections))


if __name__ == "__main__":
    main()
