"""Which dynamic INT8 settings keep a fenlei bundle within its parity gate, and what each costs in latency and size.

One fp32 bundle model (exported and fused once by ``cli.py export``) is quantized with each variant below; every
variant is measured in the same run against the fused fp32 ONNX model (which agrees with torch fp32 to about 1e-5
in the logits) on the export's own held-out texts (the validation split, like the parity gate):

- argmax agreement with fp32 and macro-F1 change at batch 32 and at batch 1 (dynamic INT8 quantizes activations
  per batch, so the two differ);
- batch-1 latency p50 over ``--latency_n`` texts, measured in ``--rounds`` blocks per variant, the variants taking
  turns block by block (load on the machine hits them alike; whole blocks, because an onnxruntime session's threads
  keep spinning for a while after each run and would slow a different session run right after it);
- model size on disk.

Variants: per-tensor or per-channel weight scales, full or reduced (7-bit) weight range, and excluding node groups
from quantization (the FFN output projections, the embedding block, the first and last layers). Writes
``benchmarks/results/int8_options.json``::

    flock /tmp/fenlei_cpu.lock python benchmarks/int8_options.py --run_dir runs/banking77_minilm
    flock /tmp/fenlei_cpu.lock python benchmarks/int8_options.py --export_args --no_cpu_rewrites true   # graph before the rewrites

``--smoke`` (plumbing check): 30 latency requests in 2 blocks, the run folder defaults to the smoke run's
``benchmarks/work/smoke/runs/banking77_minilm``, work under ``benchmarks/work/smoke/``, results in
``benchmarks/results/smoke/<name>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import SMOKE_WORK, machine, positive_int, results_dir, run_logged  # noqa: E402

# name -> (per_channel, reduce_range, node-name groups left in fp32[, weight type])
VARIANTS: dict[str, tuple] = {
    "per_tensor_u8u8": (False, False, [], "QUInt8"),
    "per_channel_u8u8": (True, False, [], "QUInt8"),
    "per_tensor": (False, False, []),
    "per_tensor_reduce_range": (False, True, []),
    "per_channel": (True, False, []),
    "per_channel_reduce_range": (True, True, []),
    "per_channel_reduce_range_keep_head": (True, True, ["head"]),
    "per_tensor_keep_ffn_out": (False, False, ["ffn_out"]),
    "per_channel_keep_ffn_out": (True, False, ["ffn_out"]),
    "per_channel_keep_embeddings": (True, False, ["embeddings"]),
    "per_channel_keep_first_last_layer": (True, False, ["first_last_layer"]),
    "per_channel_reduce_range_keep_ffn_out": (True, True, ["head", "ffn_out"]),
    "per_channel_u8u8_keep_head": (True, False, ["head"], "QUInt8"),
    "per_channel_u8u8_keep_ffn_out": (True, False, ["head", "ffn_out"], "QUInt8"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run_dir", default="runs/banking77_minilm")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--latency_n", type=positive_int, default=300, help="batch-1 requests per variant for the latency")
    p.add_argument("--rounds", type=positive_int, default=5, help="latency blocks per variant")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--name", default="int8_options")
    p.add_argument("--smoke", action="store_true", help="plumbing check (see above)")
    p.add_argument("--export_args", nargs=argparse.REMAINDER, default=[],
                   help="further options for the export of the fp32 graph (last on the line), e.g. --export_args "
                        "--no_cpu_rewrites true")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = REPO / "benchmarks" / "work" / args.name
    if args.smoke:
        if args.run_dir == p.get_default("run_dir"):
            args.run_dir = str(SMOKE_WORK / "runs" / "banking77_minilm")
        args.latency_n, args.rounds = min(args.latency_n, 30), min(args.rounds, 2)
        work = SMOKE_WORK / args.name

    from fenlei.deploy.onnx_tools import node_groups, quantize_dynamic_int8
    from fenlei.deploy.sources import SourceOptions, load_fenlei_source
    from fenlei.metrics import macro_f1
    from fenlei.serving.bundle_check import file_hashes
    from fenlei.serving.predictor import BundlePredictor, cpu_has_vnni

    bundle = work / "bundle"
    if not (bundle / "model_fp32.onnx").is_file():
        # The fused fp32 model and tokenizer come from a normal export (--force: this script is about the int8 side).
        cmd = [sys.executable, "cli.py", "export", "--ckpt_path", args.run_dir, "--out", str(bundle), "--overwrite",
               "--force", "--threads", str(args.threads), *args.export_args]
        run_logged(cmd, work / "export.log")
    source = load_fenlei_source(SourceOptions(ckpt_path=args.run_dir))
    texts, labels = source.eval_texts, np.asarray(source.eval_labels)
    fp32 = BundlePredictor(bundle, "fp32", args.threads)
    ref = fp32.predict_logits(texts, 32)
    ref_pred = ref.argmax(1)
    groups = node_groups(bundle / "model_fp32.onnx")

    engines: dict[str, Any] = {"fp32": fp32}
    report: dict[str, Any] = {"fp32": {"size_mb": round((bundle / "model_fp32.onnx").stat().st_size / 1e6, 2),
                                       "accuracy": float((ref_pred == labels).mean()),
                                       "macro_f1": macro_f1(labels, ref_pred)}}
    for name in args.variants:
        per_channel, reduce_range, excluded_groups, *rest = VARIANTS[name]
        weight_type = rest[0] if rest else "QInt8"
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        for f in bundle.iterdir():  # the bundle's other files, so BundlePredictor can load the variant
            target = folder / f.name
            # Hard links, not symlinks: a bundle's files must lie inside it (fenlei.serving.bundle_check).
            if f.is_file() and f.name not in ("model_int8.onnx", "metadata.json") and not target.exists():
                os.link(f, target)
        excluded = [n for g in excluded_groups for n in groups[g]]
        quantize_dynamic_int8(bundle / "model_fp32.onnx", folder / "model_int8.onnx", per_channel, reduce_range, excluded,
                              weight_type)
        # The variant's own INT8 model: its sha256 in the variant's metadata.json, which the predictor checks.
        variant_meta = json.loads((bundle / "metadata.json").read_text())
        variant_meta["sha256"] = {**variant_meta.get("sha256", {}), **file_hashes(folder, ("model_int8.onnx",))}
        (folder / "metadata.json").write_text(json.dumps(variant_meta, indent=2))
        engine = BundlePredictor(folder, "int8", args.threads)
        entry: dict[str, Any] = {"per_channel": per_channel, "reduce_range": reduce_range, "weight_type": weight_type,
                                 "kept_fp32": excluded_groups, "nodes_kept_fp32": len(excluded),
                                 "size_mb": round((folder / "model_int8.onnx").stat().st_size / 1e6, 2)}
        for bs in (32, 1):
            pred = engine.predict_logits(texts, bs).argmax(1)
            entry[f"batch{bs}"] = {"agreement": float((pred == ref_pred).mean()),
                                   "accuracy": float((pred == labels).mean()),
                                   "macro_f1_change_pt": 100 * (macro_f1(labels, pred) - report["fp32"]["macro_f1"])}
        entry["passes_default_gate"] = all(entry[f"batch{bs}"]["agreement"] >= 0.99
                                           and abs(entry[f"batch{bs}"]["macro_f1_change_pt"]) <= 0.5 for bs in (32, 1))
        report[name] = entry
        engines[name] = engine
        print(name, json.dumps(entry), flush=True)

    # Batch-1 latency: each engine runs a block of requests in turn (see the module docstring).
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), size=min(args.latency_n, len(texts)), replace=False)]
    times: dict[str, list[float]] = {k: [] for k in engines}
    blocks = np.array_split(np.arange(len(sample)), args.rounds)
    for block in blocks:
        for key, eng in engines.items():
            eng.predict_logits([sample[i] for i in block[:10]], 1)  # warm-up after the other engines ran
            for i in block:
                start = time.perf_counter()
                eng.predict_logits([sample[i]], 1)
                times[key].append((time.perf_counter() - start) * 1000)
    for key, t in times.items():
        report[key]["batch1_p50_ms"] = round(statistics.median(t), 3)
        report[key]["batch1_p95_ms"] = round(float(np.percentile(t, 95)), 3)
    result = {
        "benchmark": args.name, "date": dt.date.today().isoformat(),
        "command": "flock /tmp/fenlei_cpu.lock python benchmarks/int8_options.py " + " ".join(sys.argv[1:]),
        "machine": {**machine(), "vnni": cpu_has_vnni()}, "smoke": args.smoke,
        "threads": args.threads, "run_dir": args.run_dir, "eval_source": source.eval_source, "eval_n": len(texts),
        "reference": "fused fp32 ONNX of the same bundle", "latency_n": len(sample), "variants": report,
    }
    from fenlei.io import atomic_write_text

    out = results_dir(args.smoke) / f"{args.name}.json"
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
