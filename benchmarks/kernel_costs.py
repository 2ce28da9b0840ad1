"""Benchmark: onnxruntime CPU cost of the small kernels that ``fenlei/deploy/cpu_rewrites.py`` swaps, one op at a time.

Each graph is a chain of 12 identical ops on a ``[tokens, width]`` float input (20 x 384 for the layer norms, 20 x 1536
for the GELUs: a Banking77 text through MiniLM); the figure is the median time of one run of the chain divided by 12.
The sessions use the bundle's own session options and skip the fusions a bundle skips, so ``Add`` + ``LayerNormalization``
stays two ops.

    flock /tmp/fenlei_cpu.lock python benchmarks/kernel_costs.py

Writes ``benchmarks/results/kernel_costs.json`` (``--smoke``: 50 runs per chain, ``benchmarks/results/smoke/``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import machine, positive_int, results_dir  # noqa: E402
from fenlei.deploy.cpu_rewrites import DISABLED_ORT_FUSIONS  # noqa: E402
from fenlei.serving.predictor import ort_session  # noqa: E402

CHAIN = 12
# name -> (width, [(op_type, domain, inputs after x)...]) ; one entry per op applied to the running tensor x.
VARIANTS = {
    "SkipLayerNormalization (fused, with bias)": (384, [("SkipLayerNormalization", "com.microsoft", ["skip", "gamma", "beta", "bias"])]),
    "Add + Add + LayerNormalization (the rewrite, bias separate)": (384, [("Add", "", ["bias"]), ("Add", "", ["skip"]),
                                                                           ("LayerNormalization", "", ["gamma", "beta"])]),
    "Add + LayerNormalization (the rewrite, bias folded into the MatMul)": (384, [("Add", "", ["skip"]),
                                                                                   ("LayerNormalization", "", ["gamma", "beta"])]),
    "BiasGelu (fused)": (1536, [("BiasGelu", "com.microsoft", ["bias"])]),
    "Gelu (the rewrite, bias folded into the MatMul)": (1536, [("Gelu", "com.microsoft", [])]),
    "FastGelu (tanh, INT8 graph default)": (1536, [("FastGelu", "com.microsoft", [])]),
}


def build(width: int, ops: list[tuple[str, str, list[str]]], tokens: int) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
             (("skip", (1, tokens, width)), ("gamma", (width,)), ("beta", (width,)), ("bias", (width,)))]
    nodes, x = [], "x"
    for i in range(CHAIN):
        for j, (op, domain, extra) in enumerate(ops):
            out = f"y{i}_{j}"
            attrs = {"epsilon": 1e-12} if "LayerNorm" in op else {}
            if op == "LayerNormalization":
                attrs["axis"] = -1
            nodes.append(helper.make_node(op, [x, *extra], [out], domain=domain, **attrs))
            x = out
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "tokens", width])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, "tokens", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model.SerializeToString()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=positive_int, nargs="+", default=[1, 2])
    p.add_argument("--tokens", type=positive_int, default=20)
    p.add_argument("--runs", type=positive_int, default=1000)
    p.add_argument("--name", default="kernel_costs")
    p.add_argument("--smoke", action="store_true", help="plumbing check: 50 runs, results in benchmarks/results/smoke/")
    args = p.parse_args()
    if args.smoke:
        args.runs = min(args.runs, 50)
    import onnxruntime as ort

    from fenlei.io import atomic_write_json

    result: dict = {"benchmark": args.name, "command": "python benchmarks/kernel_costs.py " + " ".join(sys.argv[1:]),
                    "date": dt.date.today().isoformat(), "machine": machine(), "smoke": args.smoke,
                    "onnxruntime": ort.__version__, "tokens": args.tokens, "chain": CHAIN, "runs": args.runs,
                    "us_per_op": {}}
    tmp = REPO / "benchmarks" / "work" / "kernel_costs"
    tmp.mkdir(parents=True, exist_ok=True)
    for threads in args.threads:
        row = {}
        for name, (width, ops) in VARIANTS.items():
            path = tmp / "chain.onnx"
            path.write_bytes(build(width, ops, args.tokens))
            sess = ort_session(path, threads, DISABLED_ORT_FUSIONS)
            x = np.random.default_rng(1).standard_normal((1, args.tokens, width)).astype(np.float32)
            for _ in range(50):
                sess.run(None, {"x": x})
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                sess.run(None, {"x": x})
                times.append(time.perf_counter() - start)
            row[name] = round(1e6 * statistics.median(times) / CHAIN, 2)
            print(f"threads={threads} {name}: {row[name]} us per op", file=sys.stderr)
        result["us_per_op"][f"threads={threads}"] = row
    out = results_dir(args.smoke) / f"{args.name}.json"
    atomic_write_json(out, result)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
