"""Per-operator time of ONNX models at batch 1 (onnxruntime's own profiler), to see where a bundle's latency goes.

    flock /tmp/fenlei_cpu.lock python benchmarks/profile_onnx.py benchmarks/work/deploy/bundle_dynamic/model_int8.onnx \\
        benchmarks/work/deploy/naive/model_int8.onnx --tokenizer benchmarks/work/deploy/bundle_dynamic
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--tokenizer", required=True, help="bundle folder holding tokenizer.json")
    p.add_argument("--test_file", default="../shared/data/banking77/test.jsonl")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--max_length", type=int, default=64)
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    args = p.parse_args()
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from deploy.predictor import session_options

    tok = Tokenizer.from_file(str(Path(args.tokenizer) / "tokenizer.json"))
    tok.no_padding()  # tokenizer.json may pad to a fixed length; the predictor pads per batch
    tok.enable_truncation(max_length=args.max_length)
    texts = [json.loads(line)["text"] for line in Path(args.test_file).read_text().splitlines()[: args.n]]
    feeds = []
    for t in texts:
        ids = np.asarray([tok.encode(t).ids], dtype=np.int64)
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    for threads in args.threads:
        for model in args.models:
            opts = session_options(threads)
            with tempfile.TemporaryDirectory() as tmp:
                opts.enable_profiling = True
                opts.profile_file_prefix = os.path.join(tmp, "prof")
                sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
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


if __name__ == "__main__":
    main()
