"""Attention split into MatMul + Split + MultiHeadAttention (fenlei.deploy.unfused_attention) and the export
attempt that uses it (the attention core fp32, its Q/K/V projection a MatMulNBits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fenlei.deploy.export import export
from fenlei.deploy.unfused_attention import split_attention
from tests.deploy_support import export_args, tiny_bundle, tiny_run

TEXTS = ["the first text", "a second, longer text than the first one, with more words in it", "x", "two words"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_data: Path) -> Path:
    return tiny_bundle(tmp_path_factory, tiny_model, tiny_data)


def _session(path: Path):  # noqa: ANN202 - an onnxruntime.InferenceSession
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_split_graph_computes_what_the_fused_attention_computes(bundle: Path, tmp_path: Path) -> None:
    import onnx

    from fenlei.serving.predictor import BundlePredictor

    model = onnx.load(str(bundle / "model_fp32.onnx"))
    fused = sum(n.op_type == "Attention" for n in model.graph.node)
    assert fused > 0
    assert split_attention(model) == {"rewritten": fused, "skipped": 0}
    ops = [n.op_type for n in model.graph.node]
    assert "Attention" not in ops and ops.count("MultiHeadAttention") == ops.count("Split") == fused
    split = tmp_path / "split.onnx"
    onnx.save(model, str(split))
    encode = BundlePredictor(bundle, "fp32", 1).encode
    feed = encode(TEXTS)  # mixed lengths: the padding mask must carry over
    assert len(set(feed["attention_mask"].sum(1).tolist())) > 1
    reference = _session(bundle / "model_fp32.onnx").run(None, feed)[0]
    got = _session(split).run(None, feed)[0]
    np.testing.assert_allclose(got, reference, atol=1e-5)
    alone = _session(split).run(None, encode(TEXTS[2:3]))[0]
    np.testing.assert_allclose(alone[0], got[2], atol=1e-5)  # padding changes nothing


def test_nodes_with_settings_it_cannot_carry_stay_fused(bundle: Path) -> None:
    import onnx
    from onnx import helper

    model = onnx.load(str(bundle / "model_fp32.onnx"))
    first = next(n for n in model.graph.node if n.op_type == "Attention")
    first.attribute.append(helper.make_attribute("unidirectional", 1))
    counts = split_attention(model)
    assert counts["skipped"] == 1 and counts["rewritten"] >= 1
    assert [n.op_type for n in model.graph.node].count("Attention") == 1


def test_fp32_attention_attempt_ships_multiheadattention_and_matmulnbits(tmp_path_factory: pytest.TempPathFactory,
                                                                       tiny_model: Path, tiny_data: Path,
                                                                       tmp_path: Path) -> None:
    import onnx

    from fenlei.serving.predictor import BundlePredictor

    run_dir = tiny_run(tmp_path_factory, tiny_model, tiny_data)
    out = tmp_path / "b"
    meta = export(export_args("--ckpt_path", str(run_dir), "--out", str(out), "--fp32_attention"))
    quant = meta["quantization"]
    assert meta["parity"]["passed"] and quant["weight_only"] and quant["fp32_attention"]
    assert quant["unfused_attention"]["rewritten"] > 0
    ops = [n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node]
    assert "QAttention" not in ops and "Attention" not in ops and "MatMul" not in ops
    assert ops.count("MultiHeadAttention") == quant["unfused_attention"]["rewritten"]
    assert ops.count("MatMulNBits") == quant["matmul_nbits"]["nodes"]
    assert not any(p.name.startswith(".model_") for p in out.iterdir())  # the scratch graphs are gone
    fp32 = BundlePredictor(out, "fp32", 1).predict_logits(TEXTS, 2)
    int8 = BundlePredictor(out, "int8", 1).predict_logits(TEXTS, 2)
    np.testing.assert_array_equal(int8.argmax(1), fp32.argmax(1))
