"""ONNX steps of the export: torch -> ONNX (legacy exporter), graph fusion, dynamic/static INT8 quantization.

Only ``export_onnx`` needs torch; the rest uses onnx + onnxruntime. Kept apart from ``fenlei.deploy.export`` so the
benchmark can build the naive baseline and fenlei's path from the same pieces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fenlei.deploy.cpu_rewrites import DISABLED_ORT_FUSIONS, approximate_gelu, rewrite_for_cpu

OPSET = 17
INPUT_NAMES = ["input_ids", "attention_mask"]
# HF model types whose graphs the onnxruntime "bert" fusions understand (attention, skip-layernorm, bias-gelu).
BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "mpnet", "electra", "ernie", "deberta"}
# Name fragments of classification-head modules in exported node names (fenlei ``head``, HF ``classifier``/``score``).
HEAD_PATTERNS = ("/head/", "/classifier/", "/score/", "/pre_classifier/", "/score", "/classifier")


def export_onnx(model: Any, example: tuple[Any, Any], path: Path, opset: int = OPSET) -> None:
    """Export ``model(input_ids, attention_mask) -> logits`` with the legacy TorchScript exporter.

    ``dynamo=False`` because the dynamo exporter needs ``onnxscript``, which fenlei does not depend on (PITFALLS).
    The example must have batch >= 2 and sequence > 1, otherwise those dimensions get specialised to constants.
    """
    import warnings

    import torch

    ids, mask = example
    if ids.shape[0] < 2 or ids.shape[1] < 2:
        raise ValueError(f"export example must have batch >= 2 and sequence > 1, got {tuple(ids.shape)}")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings and the legacy exporter's deprecation notice
        torch.onnx.export(model, (ids, mask), str(path), dynamo=False, input_names=INPUT_NAMES, output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True)


def optimize_fp32(src: Path, dst: Path, model_type: str | None, num_heads: int, hidden_size: int,
                  cpu_rewrites: bool = True) -> dict[str, Any]:
    """Fuse the transformer graph with onnxruntime's optimizer (Attention, SkipLayerNormalization, BiasGelu), then
    rewrite it for onnxruntime's CPU kernels (:func:`fenlei.deploy.cpu_rewrites.rewrite_for_cpu`).

    Fusion before quantization is what makes the INT8 model fast: quantize_dynamic then turns the fused Attention
    into QAttention instead of quantizing many small MatMuls. Unknown architectures get ORT's basic level only.
    Returns a description of what was done (for metadata.json).
    """
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    fusion = model_type in BERT_LIKE
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    if fusion:
        optimized = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
    else:
        optimized = optimize_model(str(src), model_type="bert", opt_level=1, only_onnxruntime=True)
    rewrites: dict[str, Any] | None = None
    if fusion and cpu_rewrites:
        # Exact rewrites of the fused graph for onnxruntime's CPU kernels (see fenlei.deploy.cpu_rewrites).
        rewrites = rewrite_for_cpu(optimized.model)
    optimized.save_model_to_file(str(dst))
    counts: dict[str, int] = {}
    for node in onnx.load(str(dst), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    fused = {k: counts[k] for k in ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu",
                                     "FastGelu", "Gelu", "EmbedLayerNormalization", "LayerNormalization") if k in counts}
    return {"tool": "onnxruntime.transformers.optimizer", "fusion": "bert" if fusion else "none (ORT basic only)",
            "fused_ops": fused, "num_nodes": sum(counts.values()),
            **({"cpu_rewrites": rewrites, "ort_disabled_optimizers": list(DISABLED_ORT_FUSIONS)} if rewrites else {})}


def approximate_gelu_copy(src: Path, dst: Path) -> int:
    """``src`` with tanh GELU (:func:`fenlei.deploy.cpu_rewrites.approximate_gelu`) written to ``dst``; nodes changed."""
    import onnx

    model = onnx.load(str(src))
    changed = approximate_gelu(model)
    onnx.save(model, str(dst))
    return changed


def graph_nodes(model: Path | Sequence[Any]) -> list[Any]:
    """The nodes of an ONNX file (loaded once; pass the list on to the name helpers below), or ``model`` itself when
    it already is a node list."""
    import onnx

    if isinstance(model, (str, Path)):
        return list(onnx.load(str(model), load_external_data=False).graph.node)
    return list(model)


def head_nodes(model: Path | Sequence[Any]) -> list[str]:
    """Names of the classification head's MatMul/Gemm nodes (kept in fp32 with ``keep_head_fp32``) in an ONNX file
    or node list.

    Found by module name in the exported node names; if none matches, the last MatMul/Gemm before the output.
    """
    nodes = graph_nodes(model)
    linear = [n for n in nodes if n.op_type in ("MatMul", "Gemm")]
    named = [n.name for n in linear if any(p in n.name for p in HEAD_PATTERNS)]
    return named or ([linear[-1].name] if linear else [])


def ffn_output_nodes(model: Path | Sequence[Any]) -> list[str]:
    """Names of the FFN output projections: an encoder's ``layer.N/output/dense`` (not the attention's
    ``output/dense``), a decoder's ``layers.N/mlp/down_proj`` (Gemma, Llama, Qwen, SmolLM). These INT8 products
    take GELU (or gated) outputs, with the widest activation ranges of a layer (in decoders the outlier features
    of LLM.int8()), so they are the first to keep in fp32 when INT8 is not accurate enough
    (benchmarks/results/int8_options_mpnet.json)."""
    return [n.name for n in graph_nodes(model) if n.op_type in ("MatMul", "Gemm")
            and (("/output/dense/" in n.name and "/attention/" not in n.name) or "/mlp/down_proj/" in n.name)]


def node_groups(path: Path) -> dict[str, list[str]]:
    """Node names of each group that can be left in fp32 (names come from the torch module paths)."""
    nodes = graph_nodes(path)
    quantizable = [n for n in nodes if n.op_type in ("MatMul", "Attention", "EmbedLayerNormalization", "Gather")]
    layers = sorted({int(n.name.split("layer.")[1].split("/")[0]) for n in quantizable if "layer." in n.name})
    attention = [n.name for n in nodes if n.op_type == "Attention"]  # fused Attention_<i>, one per layer, in order
    ends = [f"layer.{layers[0]}/", f"layer.{layers[-1]}/"] if layers else []
    first_last = [n.name for n in quantizable if any(e in n.name for e in ends)]
    if attention:
        first_last += [attention[0], attention[-1]]
    return {
        "head": head_nodes(nodes),
        "ffn_out": ffn_output_nodes(nodes),
        "embeddings": [n.name for n in quantizable if n.op_type == "EmbedLayerNormalization" or "embeddings" in n.name],
        "first_last_layer": first_last,
    }


def _with_gemm_aliases(names: Sequence[str]) -> list[str]:
    """The quantizer rewrites a Gemm ``X`` as MatMul ``X_MatMul`` + Add before quantizing, and matches
    ``nodes_to_exclude`` against the new names: exclude both, or an excluded Gemm gets quantized anyway."""
    return [alias for name in names for alias in (name, f"{name}_MatMul")]


def quantize_dynamic_int8(src: Path, dst: Path, per_channel: bool, reduce_range: bool, exclude: Sequence[str],
                          weight_type: str = "QInt8") -> None:
    """Dynamic INT8 (weights S8 by default, activations quantized at run time): onnxruntime's advice for
    transformers. ``weight_type="QUInt8"`` gives U8U8 products, which cannot saturate on CPUs without VNNI."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # DefaultTensorType: fused contrib ops (Attention, SkipLayerNormalization) have no ONNX shape inference, so the
    # quantizer must be told their outputs are float.
    with _QuietQuantizer():
        quantize_dynamic(str(src), str(dst), per_channel=per_channel, reduce_range=reduce_range,
                         weight_type=getattr(QuantType, weight_type), nodes_to_exclude=_with_gemm_aliases(exclude),
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})


class FeedReader:
    """onnxruntime ``CalibrationDataReader`` over pre-encoded batches (feeds dicts)."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._it = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


class _QuietQuantizer:
    """onnxruntime.quantization logs advice through the root logger at WARNING; keep export output readable."""

    def __enter__(self) -> None:
        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().setLevel(self.level)


def preprocess_for_static(src: Path, dst: Path) -> None:
    """Shape inference + ORT basic optimisation, the pre-processing onnxruntime asks for before static quantization.

    Static QDQ starts from the *unfused* graph: the quantizer cannot type the outputs of fused contrib ops and
    would skip them, and onnxruntime fuses the QDQ pattern itself when it loads the model.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _QuietQuantizer():
        # Symbolic shape inference fails on the exported attention-mask arithmetic; ONNX shape inference suffices.
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


STATIC_OP_TYPES = ("MatMul", "Gemm")


def quantize_static_int8(src: Path, dst: Path, feeds: Iterable[dict[str, np.ndarray]], per_channel: bool,
                         reduce_range: bool, exclude: Sequence[str], method: str = "minmax",
                         op_types: Sequence[str] = STATIC_OP_TYPES) -> None:
    """Static INT8, QDQ format, S8S8 (onnxruntime's first static choice on x86), calibrated on ``feeds``.

    ``src`` should be the output of :func:`preprocess_for_static`. Only ``op_types`` get QDQ pairs (default: the
    MatMul/Gemm layers). Left to its default list the quantizer also puts QDQ on Add/Mul/Softmax, including the
    attention-mask arithmetic of the unfused graph, which adds ``finfo(float32).min`` to masked scores (the likely
    culprit, not isolated op by op): a calibrated
    range of about 3e38 leaves every real score in one INT8 bucket (seen on Banking77 MiniLM: 32% test accuracy
    with the default op list, 93.1% with MatMul/Gemm only).
    """
    from onnx import TensorProto
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {', '.join(methods)}, got {method!r}")

    class _Reader(FeedReader, CalibrationDataReader):
        pass

    with _QuietQuantizer():
        quantize_static(str(src), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=reduce_range, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=_with_gemm_aliases(exclude), calibrate_method=methods[method],
                        op_types_to_quantize=list(op_types),
                        extra_options={"DefaultTensorType": TensorProto.FLOAT})


def batched_feeds(encode: Callable[[list[str]], dict[str, np.ndarray]], texts: Sequence[str], batch_size: int) -> list[dict[str, np.ndarray]]:
    return [encode(list(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
