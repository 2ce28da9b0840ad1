"""Which part of a bundle's dynamic INT8 graph costs parity with fp32, and does 8-bit weight-only MatMulNBits keep it?

Exploratory (issue 19, item 5: multilingual-e5-small fails the 99% agreement gate): from a bundle's model_fp32.onnx,
builds the INT8 variants the export could ship and prints, per variant, size, argmax agreement with the fp32 graph
on a held-out JSONL at batch 32 and at batch 1, the largest logit difference, and batch-1 p50 on 150 texts:

  A  every MatMul and Attention dynamic INT8 (what fenlei export ships first)
  B  Attention INT8 (QAttention), the MatMuls fp32
  C  the MatMuls INT8, Attention fp32
  D0/D4  QAttention + 8-bit weight-only MatMulNBits (blocks 32 and 128; accuracy_level 0 = fp32 compute,
         4 = int8 compute; block 32 at level 4 is the export's weight-only attempt); needs the onnx-ir package
         that onnxruntime's MatMulNBitsQuantizer imports
  E  the word embedding alone block-quantized, every other weight fp32: 4-bit in blocks of 32 with fp32 scales
     (the export's int4 before 2026-12-02) against blocks of 16 with fp16 scales (its int4 now, the same bytes)

Every variant but E gets the export's tanh GELU and its 4-bit block-quantized word embedding.

    flock /tmp/fenlei_cpu.lock .venv/bin/python benchmarks/int8_parts.py BUNDLE_DIR HELDOUT.jsonl A B C D4 D0
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fenlei.deploy import onnx_tools  # noqa: E402
from fenlei.deploy.embeddings import quantize_gather  # noqa: E402
from fenlei.deploy.quantization import QuantizationOptions, prepare_dynamic  # noqa: E402


def main() -> None:
    import argparse

    import onnx
    import onnxruntime as ort

    from fenlei.serving.predictor import BundlePredictor

    p = argparse.ArgumentParser(description="INT8 variants of a bundle's fp32 graph against it (see the module docs)")
    p.add_argument("bundle", type=Path, help="a bundle folder written by fenlei export")
    p.add_argument("heldout", type=Path, help="held-out JSONL with a text field")
    p.add_argument("variants", nargs="+", choices=("A", "B", "C", "D0", "D4", "E"))
    args = p.parse_args()
    bundle, variants = args.bundle, set(args.variants)
    texts = [json.loads(line)["text"] for line in args.heldout.read_text(encoding="utf-8").splitlines() if line.strip()]
    # The bundle's own tokenization (its max_length, pad id and cut), as serving feeds the graph.
    encode = BundlePredictor(bundle, "fp32", 2).encode
    feeds32 = onnx_tools.batched_feeds(encode, texts, 32)
    feeds1 = onnx_tools.batched_feeds(encode, texts, 1)

    def session(path: str) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def logits(s: ort.InferenceSession, size: int = 32) -> np.ndarray:
        return np.concatenate([s.run(None, feed)[0] for feed in (feeds32 if size == 32 else feeds1)])

    def p50(s: ort.InferenceSession, n: int = 150) -> float:
        times = []
        for feed in feeds1[:n]:
            start = time.perf_counter()
            s.run(None, feed)
            times.append(1000 * (time.perf_counter() - start))
        return statistics.median(times[5:])

    fp32 = str(bundle / "model_fp32.onnx")
    ref_session = session(fp32)
    ref = logits(ref_session)
    print(f"fp32 p50 {p50(ref_session):.2f} ms", flush=True)
    nodes = list(onnx.load(fp32, load_external_data=False).graph.node)
    matmuls = [n.name for n in nodes if n.op_type == "MatMul"]
    attention = [n.name for n in nodes if n.op_type == "Attention"]
    work = Path(tempfile.mkdtemp(prefix="int8_parts_"))
    source = prepare_dynamic(Path(fp32), work, QuantizationOptions(embedding="int4"))

    def dynamic(out: Path, exclude: list[str]) -> Path:
        onnx_tools.quantize_dynamic_int8(source.graph, out, True, False,
                                         exclude + source.excluded + list(source.embedding_nodes))
        return out

    def with_embedding(path: Path, out: Path) -> Path:
        model = onnx.load(str(path))
        quantize_gather(model, "int4")
        onnx.save(model, str(out))
        return out

    def evaluate(name: str, path: Path) -> None:
        s = session(str(path))
        batch32, batch1 = logits(s), logits(s, 1)
        print(f"{name}: {os.path.getsize(path) / 1e6:.1f} MB, agreement batch 32 {(batch32.argmax(1) == ref.argmax(1)).mean():.4f}, "
              f"batch 1 {(batch1.argmax(1) == ref.argmax(1)).mean():.4f}, max |logit diff| {np.abs(batch32 - ref).max():.3f}, "
              f"batch-1 p50 {p50(s):.2f} ms", flush=True)

    if "E" in variants:
        for block, dtype in ((32, np.float32), (16, np.float16)):
            model = onnx.load(fp32)
            quantize_gather(model, "int4", block, dtype)
            onnx.save(model, str(work / f"e{block}.onnx"))
            evaluate(f"E word embedding alone, 4-bit, blocks of {block}, {np.dtype(dtype).name} scales",
                     work / f"e{block}.onnx")
    if "A" in variants:
        evaluate("A all dynamic INT8", with_embedding(dynamic(work / "a_.onnx", []), work / "a.onnx"))
    if "B" in variants:
        evaluate("B Attention INT8, MatMuls fp32", with_embedding(dynamic(work / "b_.onnx", matmuls), work / "b.onnx"))
    if "C" in variants:
        evaluate("C MatMuls INT8, Attention fp32", with_embedding(dynamic(work / "c_.onnx", attention), work / "c.onnx"))
    for level in (0, 4):
        if f"D{level}" not in variants:
            continue
        from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

        base = dynamic(work / "d_.onnx", matmuls)
        for block in (32, 128):
            config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=level, bits=8)
            quantizer = MatMulNBitsQuantizer(onnx.load(str(base)), algo_config=config, nodes_to_exclude=source.excluded)
            quantizer.process()
            onnx.save(quantizer.model.model, str(work / "d2_.onnx"))
            evaluate(f"D accuracy_level {level}, block {block}: QAttention + MatMulNBits 8-bit",
                     with_embedding(work / "d2_.onnx", work / f"d{level}_{block}.onnx"))


if __name__ == "__main__":
    main()
