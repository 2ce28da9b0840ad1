"""fenlei.deploy.cpu_rewrites: the rewritten graph computes the same logits, and the bundle's sessions keep it as written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fenlei.deploy.cpu_rewrites import (
    DISABLED_ORT_FUSIONS,
    approximate_gelu,
    rewrite_for_cpu,
    segment_ids_are_constant_zero,
)
from fenlei.serving.predictor import BundleError, BundlePredictor, ort_session
from tests.deploy_support import copy_bundle, tiny_bundle

H, VOCAB, POSITIONS = 8, 30, 16


def _fused_graph(segment: str = "zeros") -> onnx.ModelProto:
    """A miniature fused BERT block: EmbedLayerNormalization -> MatMul -> SkipLayerNormalization -> MatMul -> BiasGelu.

    ``segment``: how the segment ids are computed, ``zeros`` (from the input's shape, as the exported HF models do),
    ``ones`` (shape-only but not zero) or ``content`` (read from input_ids).
    """
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [init("word", VOCAB, H), init("pos", POSITIONS, H), init("seg", 2, H), init("g0", H), init("b0", H),
             init("w1", H, H), init("bias1", H), init("g1", H), init("b1", H), init("w2", H, 2 * H), init("bias2", 2 * H)]
    nodes = [helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32),
             helper.make_node("Cast", ["attention_mask"], ["mask32"], to=TensorProto.INT32)]
    if segment == "content":
        two = numpy_helper.from_array(np.array(2, dtype=np.int64))
        nodes += [helper.make_node("Constant", [], ["two"], value=two), helper.make_node("Mod", ["input_ids", "two"], ["parity"]),
                  helper.make_node("Cast", ["parity"], ["seg_ids"], to=TensorProto.INT32)]
    else:
        value = numpy_helper.from_array(np.array([0 if segment == "zeros" else 1], dtype=np.int32))
        nodes += [helper.make_node("Shape", ["input_ids"], ["shape"]),
                  helper.make_node("ConstantOfShape", ["shape"], ["seg_ids"], value=value)]
    nodes += [
        helper.make_node("EmbedLayerNormalization", ["ids32", "seg_ids", "word", "pos", "seg", "g0", "b0", "mask32"],
                         ["emb", "mask_index"], domain="com.microsoft", epsilon=1e-12),
        helper.make_node("MatMul", ["emb", "w1"], ["dense"]),
        helper.make_node("SkipLayerNormalization", ["dense", "emb", "g1", "b1", "bias1"], ["ln1"],
                         domain="com.microsoft", epsilon=1e-12),
        helper.make_node("MatMul", ["ln1", "w2"], ["up"]),
        helper.make_node("BiasGelu", ["up", "bias2"], ["logits"], domain="com.microsoft"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", 2 * H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], disabled: tuple[str, ...] = ()) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled))
    return sess.run(None, feeds)[0]


def _feeds(batch: int = 2, seq: int = 5) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(1).integers(1, VOCAB, size=(batch, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def test_rewrite_keeps_the_logits_and_replaces_the_slow_kernels() -> None:
    model = _fused_graph()
    before = _run(model, _feeds())
    report = rewrite_for_cpu(model)
    assert report["SkipLayerNormalization_split"] == 1 and report["BiasGelu_split"] == 1 and report["token_type_folded"]
    ops = [n.op_type for n in model.graph.node]
    assert "SkipLayerNormalization" not in ops and "BiasGelu" not in ops and "Gelu" in ops and "LayerNormalization" in ops
    assert "ConstantOfShape" not in ops and "seg" not in {t.name for t in model.graph.initializer}  # zeros folded away
    # The bias is added straight onto the MatMul output (so onnxruntime can fold it into the matrix product).
    producers = {o: n for n in model.graph.node for o in n.output}
    bias_adds = [n for n in model.graph.node if n.op_type == "Add" and {"bias1", "bias2"} & set(n.input)]
    assert len(bias_adds) == 2 and all(producers[n.input[0]].op_type == "MatMul" for n in bias_adds)
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, _feeds(), DISABLED_ORT_FUSIONS), before, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_run(model, _feeds(3, 9), DISABLED_ORT_FUSIONS), _run(_fused_graph(), _feeds(3, 9)),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("segment", "why"), [("ones", "not all zero"), ("content", "Mod node")])
def test_token_types_that_are_not_constant_zero_are_kept(segment: str, why: str) -> None:
    model = _fused_graph(segment)
    ok, reason = segment_ids_are_constant_zero(model, "seg_ids")
    assert not ok and why in reason
    before = _run(model, _feeds())
    report = rewrite_for_cpu(model)
    assert not report["token_type_folded"] and why in report["token_type_kept"]
    assert any(n.op_type == "EmbedLayerNormalization" and n.input[1] == "seg_ids" for n in model.graph.node)
    np.testing.assert_allclose(_run(model, _feeds(), DISABLED_ORT_FUSIONS), before, rtol=1e-4, atol=1e-5)


def test_tanh_gelu_stays_within_its_bound() -> None:
    """approximate_gelu: FastGelu replaces the erf Gelu; outputs move by no more than the approximation's ~3e-4 per unit."""
    model = _fused_graph()
    rewrite_for_cpu(model)
    exact = _run(model, _feeds(), DISABLED_ORT_FUSIONS)
    assert approximate_gelu(model) == 1
    assert [n.op_type for n in model.graph.node if "Gelu" in n.op_type] == ["FastGelu"]
    approx = _run(model, _feeds(), DISABLED_ORT_FUSIONS)
    assert 0 < np.abs(approx - exact).max() < 1e-3 * max(1.0, float(np.abs(exact).max()))


def test_skip_layer_norm_with_used_statistics_is_left_fused() -> None:
    model = _fused_graph()
    node = next(n for n in model.graph.node if n.op_type == "SkipLayerNormalization")
    node.output.extend(["mean", "inv_std"])
    model.graph.output.append(helper.make_tensor_value_info("mean", TensorProto.FLOAT, None))
    report = rewrite_for_cpu(model)
    assert report["SkipLayerNormalization_split"] == 0
    assert any(n.op_type == "SkipLayerNormalization" for n in model.graph.node)


def test_bundle_sessions_serve_the_rewritten_graph(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
                                                   tiny_data: Path, tmp_path: Path) -> None:
    """The tiny BERT bundle is rewritten, says which fusions to skip, and its predictor's session skips them."""
    bundle = tiny_bundle(tmp_path_factory, tiny_model, tiny_data)
    meta = json.loads((bundle / "metadata.json").read_text())
    opt = meta["optimization"]
    assert opt["cpu_rewrites"]["SkipLayerNormalization_split"] == 4 and opt["cpu_rewrites"]["BiasGelu_split"] == 2
    assert opt["cpu_rewrites"]["token_type_folded"] is True
    assert opt["ort_disabled_optimizers"] == list(DISABLED_ORT_FUSIONS)
    predictor = BundlePredictor(bundle, "int8")
    assert predictor.predict(["reset my password"])[0]["label"]
    # What onnxruntime actually runs: the bundle's session options keep Add + LayerNormalization.
    opts_path = tmp_path / "served.onnx"
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.optimized_model_filepath = str(opts_path)
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    onnxruntime.InferenceSession(str(bundle / "model_int8.onnx"), opts, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=opt["ort_disabled_optimizers"])
    served = {n.op_type for n in onnx.load(str(opts_path)).graph.node}
    assert "SkipLayerNormalization" not in served and "LayerNormalization" in served
    assert ort_session(bundle / "model_fp32.onnx", 1, opt["ort_disabled_optimizers"]).get_inputs()[0].name == "input_ids"


def test_no_cpu_rewrites_keeps_onnxruntime_fusions(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
                                                   tiny_data: Path, tmp_path: Path) -> None:
    from fenlei.deploy.export import export
    from tests.deploy_support import export_args, tiny_run

    run_dir = tiny_run(tmp_path_factory, tiny_model, tiny_data)
    meta = export(export_args("--ckpt_path", str(run_dir), "--out", str(tmp_path / "b"), "--no_cpu_rewrites"))
    assert "cpu_rewrites" not in meta["optimization"] and "ort_disabled_optimizers" not in meta["optimization"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "b" / "model_fp32.onnx")).graph.node}
    assert {"SkipLayerNormalization", "BiasGelu"} <= ops
    assert BundlePredictor(tmp_path / "b", "int8").predict(["reset my password"])[0]["label"]


def test_malformed_fusion_list_is_refused(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_data: Path,
                                          tmp_path: Path) -> None:
    """onnxruntime silently accepts any names, so a string where the list belongs must not pass as 'skip nothing'."""
    bundle = copy_bundle(tiny_bundle(tmp_path_factory, tiny_model, tiny_data), tmp_path / "b")
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["optimization"]["ort_disabled_optimizers"] = "SkipLayerNormFusion"
    (bundle / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"metadata\.json: optimization\.ort_disabled_optimizers must be a list"):
        BundlePredictor(bundle, "int8")
