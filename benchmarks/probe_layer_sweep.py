"""Probe layer sweep: the features of several layers from ONE forward pass against one pass per layer.

    flock /tmp/fenlei_cpu.lock .venv/bin/python benchmarks/probe_layer_sweep.py --texts 1000

What ``fenlei probe --layers 0.25 0.5 0.75 -1`` does (``fenlei.probe.features.extract_layers``) against what N
separate ``fenlei probe --layer X`` runs did before (one ``extract`` per layer). Both time the extraction only, on
the same loaded model, texts and batches (the separate runs would also pay a model load each); the rounds
alternate the two so drift hits both. The features of both must be identical (checked: exit status 1 when they are
not). Writes ``benchmarks/results/probe_layer_sweep.json`` (``--smoke``: the tiny random encoder of the tests on 60
texts, one round, ``benchmarks/results/smoke/``); BENCHMARKS.md draws the table from it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO, machine, positive_int, results_dir, smoke_data, smoke_encoder  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="packaged:minilm")
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/banking77/train.jsonl"))
    parser.add_argument("--texts", type=positive_int, default=1000)
    parser.add_argument("--layers", nargs="+", default=["0.25", "0.5", "0.75", "-1"])
    parser.add_argument("--max_length", type=positive_int, default=64)
    parser.add_argument("--batch_size", type=positive_int, default=16)
    parser.add_argument("--rounds", type=positive_int, default=2)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--name", default="probe_layer_sweep")
    parser.add_argument("--smoke", action="store_true",
                        help="plumbing check: the tiny random encoder, 60 texts, one round, results in benchmarks/results/smoke/")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.data = str(smoke_encoder()), str(smoke_data("banking77") / "train.jsonl")
        args.texts, args.rounds = min(args.texts, 60), 1

    import numpy as np
    import torch

    from fenlei.probe.features import extract, extract_layers, load_backbone, load_feature_tokenizer

    torch.set_num_threads(args.threads)
    layers = [float(v) if "." in v else int(v) for v in args.layers]
    rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [str(r["text"]) for r in rows[: args.texts]]
    model, tokenizer = load_backbone(args.model, "cpu"), load_feature_tokenizer(args.model)

    def one_pass() -> list:
        return extract_layers(model, tokenizer, texts, layers, "mean", args.max_length, args.batch_size)

    def per_layer() -> list:
        return [extract(model, tokenizer, texts, layer, "mean", args.max_length, args.batch_size) for layer in layers]

    one_pass()  # warm-up (first-call allocations, thread pool)
    times: dict[str, list[float]] = {"one_pass": [], "per_layer": []}
    outputs = {}
    for _ in range(args.rounds):
        for name, fn in (("one_pass", one_pass), ("per_layer", per_layer)):
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    max_diff = max(float(np.abs(a - b).max()) for a, b in zip(outputs["one_pass"], outputs["per_layer"], strict=True))
    one, separate = statistics.median(times["one_pass"]), statistics.median(times["per_layer"])
    result = {
        "benchmark": args.name,
        "command": "flock /tmp/fenlei_cpu.lock .venv/bin/python benchmarks/probe_layer_sweep.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "smoke": args.smoke,
        "machine": machine(),
        "torch_threads": args.threads,
        "model": os.path.relpath(args.model, REPO) if Path(args.model).exists() else args.model,
        "data": os.path.relpath(args.data, REPO), "texts": len(texts), "layers": layers, "max_length": args.max_length,
        "batch_size": args.batch_size, "rounds": args.rounds,
        "seconds": times,
        "one_pass_seconds": round(one, 3), "per_layer_seconds": round(separate, 3),
        "one_pass_texts_per_s": round(len(texts) / one, 1), "per_layer_texts_per_s": round(len(texts) / separate, 1),
        "speedup": round(separate / one, 2),
        "max_abs_feature_difference": max_diff,
    }
    from fenlei.io import atomic_write_text

    out = results_dir(args.smoke) / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("one_pass_seconds", "per_layer_seconds", "speedup",
                                             "max_abs_feature_difference")}))
    return 0 if max_diff == 0.0 else 1


if __name__ == "__main__":
    sys.exit(main())
