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
           f"Date: {res['date']}; machine: {res['machine']['platform']}, {res['machine']['cpus']} CPUs; config `{res['config']}`.  ",
           f"Budget (both sides): {budget['epochs']} epochs, lr {budget['lr']}, batch {budget['batch_size']}, "
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
    if res.get("notes"):
        out += [res["notes"], ""]
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
