"""Per-operator time of ONNX models at batch 1 (onnxruntime's own profiler), to see where a bundle's latency goes;
with ``--latency_only``, plain batch-1 latency instead (no profiler), the models taking turns block by block.

    flock /tmp/fenlei_cpu.lock python benchmarks/profile_onnx.py benchmarks/work/deploy/bundle_dynamic/model_int8.onnx \\
        benchmarks/work/deploy/naive/model_int8.onnx --tokenizer benchmarks/work/deploy/bundle_dynamic

Needs only onnxruntime, tokenizers and NumPy (``fenlei.serving.predictor`` imports nothing else), so it also runs on a
machine without the project's environment (the two models, tokenizer.json and the test file copied there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import machine, positive_int  # noqa: E402
from fenlei.serving.predictor import disabled_optimizers, ort_session, session_options  # noqa: E402  (torch-free: onnxruntime, tokenizers, NumPy)


def skip_fusions(model: str) -> list[str]:
    """A bundle's model runs the way its predictor runs it: without the fusions its metadata.json names."""
    meta = Path(model).parent / "metadata.json"
    return disabled_optimizers(json.loads(meta.read_text())) if meta.is_file() else []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--tokenizer", required=True, help="bundle folder holding tokenizer.json")
    p.add_argument("--test_file", default="../shared/data/banking77/test.jsonl")
    p.add_argument("--n", type=positive_int, default=300)
    p.add_argument("--max_length", type=int, default=64)
    p.add_argument("--threads", type=positive_int, nargs="+", default=[2])
    p.add_argument("--latency_only", action="store_true", help="no profiler: batch-1 p50/p95 per model and thread count")
    p.add_argument("--rounds", type=positive_int, default=5, help="--latency_only: blocks per model")
    p.add_argument("--out", help="--latency_only: write the figures to this JSON file")
    p.add_argument("--name", help="--latency_only: a benchmark name for the JSON (rendered into BENCHMARKS.md)")
    p.add_argument("--labels", nargs="+", help="--latency_only: one short label per model, in order")
    p.add_argument("--smoke", action="store_true", help="--latency_only: mark the JSON as a smoke run's (run_all.py)")
    args = p.parse_args()
    if args.labels and len(args.labels) != len(args.models):
        p.error(f"--labels: {len(args.labels)} labels for {len(args.models)} models")
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(args.tokenizer) / "tokenizer.json"))
    tok.no_padding()  # tokenizer.json may pad to a fixed length; the predictor pads per batch
    tok.enable_truncation(max_length=args.max_length)
    texts = [json.loads(line)["text"] for line in Path(args.test_file).read_text().splitlines()[: args.n]]
    feeds = []
    for t in texts:
        ids = np.asarray([tok.encode(t).ids], dtype=np.int64)
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    if args.latency_only:
        latency_only(args, feeds)
        return
    for threads in args.threads:
        for model in args.models:
            opts = session_options(threads)
            with tempfile.TemporaryDirectory() as tmp:
                opts.enable_profiling = True
                opts.profile_file_prefix = os.path.join(tmp, "prof")
                sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=skip_fusions(model))
                names = {i.name for i in sess.get_inputs()}
                for f in feeds[:20]:
                    sess.run(None, {k: v for k, v in f.items() if k in names})
                times = []
                for f in feeds:
                    start = time.perf_counter()
                    sess.run(None, {k: v for k, v in f.items() if k in names})
                    times.append((time.perf_counter() - start) * 1000)
                events = json.loads(Path(sess.end_profiling()).read_text())
            per_op: dict[str, float] = defaultdict(float)
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    per_op[e["args"]["op_name"]] += e["dur"] / 1000 / (len(feeds) + 20)
            total = sum(per_op.values())
            print(f"{model} threads={threads}: p50 {statistics.median(times):.2f} ms (profiled), "
                  f"kernels {total:.2f} ms per request")
            for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:10]:
                print(f"   {op:32s} {ms:.3f} ms")


def latency_only(args: argparse.Namespace, feeds: list[dict[str, np.ndarray]]) -> None:
    import datetime as dt
    import platform

    import onnxruntime as ort

    result: dict = {"benchmark": args.name, "command": "python benchmarks/profile_onnx.py " + " ".join(sys.argv[1:]),
                    "labels": dict(zip(args.models, args.labels or args.models, strict=True)),
                    "date": dt.date.today().isoformat(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "machine": machine(), "smoke": args.smoke,
                    "onnxruntime": ort.__version__, "n": len(feeds), "rounds": args.rounds,
                    "p50_ms": {}, "p95_ms": {}}
    for threads in args.threads:
        sessions = {m: ort_session(m, threads, skip_fusions(m)) for m in args.models}
        times: dict[str, list[float]] = {m: [] for m in sessions}
        for block in np.array_split(np.arange(len(feeds)), args.rounds):
            for model, sess in sessions.items():
                names = {i.name for i in sess.get_inputs()}
                for i in block[:10]:  # warm-up after the other model ran
                    sess.run(None, {k: v for k, v in feeds[i].items() if k in names})
                for i in block:
                    start = time.perf_counter()
                    sess.run(None, {k: v for k, v in feeds[i].items() if k in names})
                    times[model].append((time.perf_counter() - start) * 1000)
        for model, t in times.items():
            key = f"{model} threads={threads}"
            result["p50_ms"][key] = round(statistics.median(t), 3)
            result["p95_ms"][key] = round(float(np.percentile(t, 95)), 3)
            print(f"{key}: p50 {result['p50_ms'][key]:.3f} ms, p95 {result['p95_ms'][key]:.3f} ms")
    if args.out:
        from fenlei.io import atomic_write_json

        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
