"""Benchmark: fenlei vs a plain Hugging Face Trainer script on Banking77, same model and budget, one run.

Phases (each a separate process, run one after another so they never share the 2 cores):
1. Throughput: ``--throughput_steps`` training steps of fenlei, the plain HF Trainer and the HF Trainer with its
   best settings (``train_sampling_strategy="group_by_length"`` + ``bf16``), repeated ``--repeats`` times; the
   median samples/s is reported. fenlei's figure excludes validation; HF's is the wall time of ``train()``.
2. Accuracy: full runs (``--epochs``) of each; fenlei selects its checkpoint on a 10% stratified validation
   split of train (the HF scripts train on all of train and keep the last epoch), all report the test split.

Writes ``benchmarks/results/<name>.json`` with keys ``fenlei``, ``hf_trainer``, ``hf_trainer_tuned`` (each with
``test_accuracy``, ``test_macro_f1``, ``train_samples_per_s``), ``ratios`` and ``targets``; then re-renders
BENCHMARKS.md. Example (about 45 minutes on the 2-core CPU here)::

    python benchmarks/banking77.py --config configs/bench/banking77_minilm.yaml --name banking77_minilm
    python benchmarks/banking77.py --config configs/bench/banking77_minilm.yaml --name banking77_minilm --smoke

``--smoke`` (a plumbing check of a minute or two): the tiny random BERT of the tests for every system, 4 training
and 1 test text per intent, one epoch, 5 throughput steps once; results in ``benchmarks/results/smoke/`` and the
work folder under ``benchmarks/work/smoke/``, BENCHMARKS.md left alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import SMOKE_WORK, machine, results_dir, run_logged, smoke_data, smoke_encoder  # noqa: E402
from fenlei.io import atomic_write_json  # noqa: E402
from fenlei.training.run_dir import RunDir  # noqa: E402

WORK = REPO / "benchmarks" / "work"
PYTHON = sys.executable


def fenlei_fit(config: str, run_dir: Path, extra: list[str], log: Path) -> dict[str, Any]:
    cmd = [PYTHON, "cli.py", "fit", "--config", config, f"--trainer.default_root_dir={run_dir}", "--wandb.mode=disabled", *extra]
    run_logged(cmd, log)
    return json.loads(RunDir(run_dir).summary.read_text())


def hf_run(model: str, data_dir: str, mode: str, args: argparse.Namespace, out: Path, log: Path, max_steps: int | None) -> dict[str, Any]:
    cmd = [PYTHON, "benchmarks/hf_trainer_baseline.py", "--model", model, "--data_dir", data_dir, "--mode", mode,
           "--epochs", str(args.epochs), "--lr", str(args.lr), "--batch_size", str(args.batch_size),
           "--max_length", str(args.max_length), "--seed", str(args.seed), "--out", str(out)]
    if max_steps:
        cmd += ["--max_steps", str(max_steps)]
    run_logged(cmd, log)
    return json.loads(out.read_text())


def read_config(config: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((REPO / config).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/bench/banking77_minilm.yaml")
    parser.add_argument("--name", default="banking77_minilm", help="results file name (benchmarks/results/NAME.json)")
    parser.add_argument("--throughput_steps", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip_hf", action="store_true", help="fenlei only (e.g. MPNet, where HF runs would take hours)")
    parser.add_argument("--skip_throughput", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="plumbing check: tiny model, 4 texts per intent, 1 epoch "
                        "(results in benchmarks/results/smoke/)")
    args = parser.parse_args()

    cfg = read_config(args.config)
    data_args = cfg["data"]["init_args"]
    args.epochs = cfg["trainer"]["max_epochs"]
    args.lr = cfg["model"]["init_args"]["lr"]
    args.batch_size = data_args["batch_size"]
    args.max_length = data_args["max_length"]
    args.seed = cfg["seed_everything"]
    from fenlei.pretrained import resolve_pretrained

    # The smoke run never resolves the config's packaged model (it may not be installed).
    model_path = "" if args.smoke else resolve_pretrained(cfg["model"]["init_args"]["pretrained"])
    data_dir = data_args["data_dir"]
    work = WORK / args.name
    overrides: list[str] = []  # for every fenlei fit and test: the smoke run's model, data and budget
    if args.smoke:
        model_path = str(smoke_encoder())
        data_dir = str(smoke_data("banking77"))
        args.epochs, args.max_length, args.repeats = 1, 32, 1
        args.throughput_steps = min(args.throughput_steps, 5)
        work = SMOKE_WORK / args.name
        overrides = [f"--model.init_args.pretrained={model_path}", f"--data.init_args.tokenizer={model_path}",
                     f"--data.init_args.data_dir={data_dir}", "--trainer.max_epochs=1", "--data.init_args.max_length=32"]
    out_path = results_dir(args.smoke) / f"{args.name}.json"
    results: dict[str, Any] = {
        "benchmark": args.name,
        "command": "python " + " ".join([Path(sys.argv[0]).relative_to(REPO).as_posix() if Path(sys.argv[0]).is_absolute() else sys.argv[0], *sys.argv[1:]]),
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "smoke": args.smoke,
        "config": args.config,
        "budget": {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "max_length": args.max_length, "seed": args.seed},
    }
    systems = ["fenlei"] if args.skip_hf else ["fenlei", "hf_trainer", "hf_trainer_tuned"]
    throughput: dict[str, list[float]] = {s: [] for s in systems}
    if not args.skip_throughput:
        for repeat in range(args.repeats):
            for system in systems:
                log = work / f"throughput_{system}_{repeat}.log"
                if system == "fenlei":
                    summary = fenlei_fit(args.config, work / f"throughput_fenlei_{repeat}",
                                         [f"--trainer.max_steps={args.throughput_steps}", "--trainer.limit_val_batches=0",
                                          "--trainer.num_sanity_val_steps=0",
                                          "--checkpoint.save_top_k=0", *overrides], log)
                    value = summary["train_samples_per_s"]
                else:
                    mode = "plain" if system == "hf_trainer" else "tuned"
                    value = hf_run(model_path, data_dir, mode, args, work / f"throughput_{system}_{repeat}.json", log,
                                   args.throughput_steps)["train_samples_per_s"]
                throughput[system].append(value)
                print(f"[throughput] {system} repeat {repeat}: {value:.1f} samples/s", flush=True)

    for system in systems:
        log = work / f"full_{system}.log"
        if system == "fenlei":
            run_dir = work / "full_fenlei"
            summary = fenlei_fit(args.config, run_dir, overrides, log)
            run_logged([PYTHON, "cli.py", "test", "--config", args.config, f"--trainer.default_root_dir={run_dir}",
                 "--ckpt_path=best", "--wandb.mode=disabled", *overrides], work / "full_fenlei_test.log")
            test = json.loads(RunDir(run_dir).test_metrics.read_text())
            entry = {"test_accuracy": test["test/acc"], "test_macro_f1": test["test/f1_macro"],
                     "test_weighted_f1": test["test/f1_weighted"], "test_top5": test.get("test/top5"), "test_ece": test["test/ece"],
                     "best_val_macro_f1": summary["best_score"], "full_run_train_s": summary["train_seconds"],
                     "full_run_samples_per_s": summary["train_samples_per_s"], "train_examples": "90% of train (10% held out for validation)"}
        else:
            mode = "plain" if system == "hf_trainer" else "tuned"
            out = hf_run(model_path, data_dir, mode, args, work / f"full_{system}.json", log, None)
            entry = {"test_accuracy": out["test_accuracy"], "test_macro_f1": out["test_macro_f1"],
                     "full_run_train_s": out["train_time_s"], "full_run_samples_per_s": out["train_samples_per_s"],
                     "precision_used": out.get("precision_used"), "train_examples": "100% of train"}
        if throughput[system]:
            entry["train_samples_per_s"] = round(statistics.median(throughput[system]), 2)
            entry["throughput_runs"] = [round(v, 2) for v in throughput[system]]
            entry["throughput_steps"] = args.throughput_steps
        else:
            entry["train_samples_per_s"] = entry["full_run_samples_per_s"]
        results[system] = entry
        print(f"[full] {system}: {json.dumps(entry)}", flush=True)
        atomic_write_json(out_path, results)  # partial results survive

    if not args.skip_hf:
        fl, hf, tuned = results["fenlei"], results["hf_trainer"], results["hf_trainer_tuned"]
        results["ratios"] = {
            "throughput_vs_hf_trainer": round(fl["train_samples_per_s"] / hf["train_samples_per_s"], 2),
            "throughput_vs_hf_trainer_tuned": round(fl["train_samples_per_s"] / tuned["train_samples_per_s"], 2),
            "accuracy_minus_hf_trainer_pt": round(100 * (fl["test_accuracy"] - hf["test_accuracy"]), 2),
        }
        results["targets"] = {
            "fenlei_test_accuracy_ge_0.935": fl["test_accuracy"] >= 0.935,
            "fenlei_accuracy_ge_hf_trainer": fl["test_accuracy"] >= hf["test_accuracy"],
            "throughput_ge_2x_hf_trainer": results["ratios"]["throughput_vs_hf_trainer"] >= 2.0,
            "throughput_ge_1.1x_hf_trainer_tuned": results["ratios"]["throughput_vs_hf_trainer_tuned"] >= 1.1,
        }
    atomic_write_json(out_path, results)
    if not args.smoke:
        subprocess.run([PYTHON, "benchmarks/render.py"], cwd=REPO, check=False)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
