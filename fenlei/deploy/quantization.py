"""INT8 quantization of the exported graph: which settings to try, in which order, and one attempt's model."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Optional

from fenlei.deploy import embeddings, onnx_tools
from fenlei.deploy.embeddings import EmbeddingQuantization
from fenlei.deploy.errors import ExportError
from fenlei.deploy.parity import Attempt, Log

NO_FFN_OUTPUTS = ("--keep_ffn_out_fp32: the graph has no FFN output projections to keep in fp32 (no MatMul named "
                  "'layer.N/output/dense' or 'layers.N/mlp/down_proj'; BERT-family encoders and HF decoders have one "
                  "per layer)")
NO_ATTENTION = ("--fp32_attention: the graph has no fused Attention node to split (not a BERT-like encoder, or "
                "--no_optimize)")


@dataclass(frozen=True)
class QuantizationOptions:
    """The INT8 settings (the ``quantization`` options of ``fenlei export``; None: decided per scheme)."""

    mode: Literal["dynamic", "static"] = "dynamic"
    per_channel: bool = True
    reduce_range: Optional[bool] = None
    keep_ffn_out_fp32: Optional[bool] = None
    keep_head_fp32: Optional[bool] = None
    gelu_approximation: bool = True
    calibration_size: int = 512
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    seed: int = 0
    embedding: EmbeddingQuantization = "auto"
    weight_only_matmuls: Optional[bool] = None
    fp32_attention: Optional[bool] = None

    @property
    def head_fp32(self) -> bool:
        """The head stays fp32 by default for dynamic INT8: it runs once per text, where INT8 only adds
        quantize/dequantize work; static keeps it INT8 unless asked."""
        return self.keep_head_fp32 if self.keep_head_fp32 is not None else self.mode == "dynamic"


def quantization_attempts(options: QuantizationOptions) -> list[Attempt]:
    """The INT8 models to try in order until one passes the parity gate.

    Given flags make one attempt (``--reduce_range``/``--no-reduce_range``, with ``--keep_ffn_out_fp32`` or not;
    ``--weight_only_matmuls``, ``--fp32_attention``). Dynamic INT8 by default: 8-bit weights; then 7-bit (the
    remedy for u8s8 saturation on CPUs without VNNI); then the MatMuls as 8-bit weight-only MatMulNBits (as small,
    with an activation scale per block of 32 values instead of one per tensor: multilingual-e5-small on
    online_shopping, docs/deployment.md), first with QAttention, then with the attention core fp32 and its Q/K/V
    projection a MatMulNBits too; then 7-bit with the FFN output projections in fp32 (a larger bundle, so only
    when the smaller models are not accurate enough; faster than weight-only on a CPU without VNNI, where
    ``--no-weight_only_matmuls`` makes it the third attempt: docs/deployment.md). ``--no-weight_only_matmuls``
    leaves out both weight-only attempts, ``--no-fp32_attention`` the second. Static: the full range, one attempt.
    """
    keep_ffn, weight_only, fp32_attention = (options.keep_ffn_out_fp32, options.weight_only_matmuls,
                                             options.fp32_attention)
    if options.mode == "static":
        if weight_only or fp32_attention:
            raise ExportError(f"--{'weight_only_matmuls' if weight_only else 'fp32_attention'}: only with "
                              "--quantization dynamic")
        return [Attempt(bool(options.reduce_range), bool(keep_ffn))]
    if fp32_attention and weight_only is False:
        raise ExportError("--fp32_attention needs the weight-only MatMuls (drop --no-weight_only_matmuls)")
    if fp32_attention:
        return [Attempt(False, bool(keep_ffn), True, True)]
    if weight_only:
        return [Attempt(False, bool(keep_ffn), True)]
    if options.reduce_range is not None:
        return [Attempt(options.reduce_range, bool(keep_ffn))]
    nbits = [] if weight_only is False else [Attempt(False, bool(keep_ffn), True)] + (
        [] if fp32_attention is False else [Attempt(False, bool(keep_ffn), True, True)])
    if keep_ffn is None:
        return [Attempt(False, False), Attempt(True, False), *nbits, Attempt(True, True)]
    return [Attempt(False, keep_ffn), Attempt(True, keep_ffn), *nbits]


class DynamicSource(NamedTuple):
    graph: Path  # what dynamic INT8 quantizes: the fused graph, or a copy with tanh GELU
    excluded: list[str]  # nodes every attempt leaves in fp32 (the head, with keep_head_fp32)
    ffn_out: list[str]  # the FFN output projections, left in fp32 by the keep_ffn_out_fp32 attempts
    changes: dict[str, Any]  # what the copy changed, for metadata.quantization
    embedding: Optional[str] = None  # word-embedding Gather: "int8"/"int4" block-quantized, "none" fp32, None default
    embedding_nodes: tuple[str, ...] = ()  # that Gather (and its id map), kept out of quantize_dynamic
    has_attention: bool = True  # a fused com.microsoft Attention (what the fp32_attention attempt splits)


def prepare_dynamic(fp32: Path, tmp: Path, options: QuantizationOptions) -> DynamicSource:
    """Prepared once (one read of the fused graph): every attempt quantizes the same graph. The GELU copy keeps
    every node name, so the names found in ``fp32`` hold for it."""
    import onnx

    model = onnx.load(str(fp32))
    nodes = list(model.graph.node)
    excluded = onnx_tools.head_nodes(nodes) if options.head_fp32 else []
    ffn_out = onnx_tools.ffn_output_nodes(nodes)
    word = embeddings.find_word_embedding(model)
    scheme = embeddings.resolve_scheme(options.embedding, int(word.table.dims[0]) if word else None)
    if options.embedding in ("int8", "int4", "none") and word is None:
        raise ExportError(f"--embedding_quantization {options.embedding}: the graph has no word-embedding Gather "
                          "on input_ids (fused into EmbedLayerNormalization?)")
    # The table's Gather and its id map (a trimmed vocabulary) stay out of quantize_dynamic, which would store the
    # table per-tensor uint8; the INT8 graph gets a GatherBlockQuantized instead (or keeps fp32 with "none").
    word_nodes = tuple(n.name for n in nodes if word is not None and scheme is not None
                       and (n.name == word.node.name or n.output[0] == word.node.input[1]))
    extra = {"embedding": scheme, "embedding_nodes": word_nodes,
             "has_attention": any(n.op_type == "Attention" and n.domain == "com.microsoft" for n in nodes)}
    if not options.gelu_approximation:
        return DynamicSource(fp32, excluded, ffn_out, {}, **extra)
    copy = tmp / ".model_for_int8.onnx"
    changed = onnx_tools.approximate_gelu_copy(fp32, copy)
    return DynamicSource(copy, excluded, ffn_out, {"gelu_approximated": changed}, **extra)


def attempts_for_graph(attempts: list[Attempt], has_ffn_outputs: bool, options: QuantizationOptions,
                       has_attention: bool = True) -> list[Attempt]:
    """Graphs without BERT-style FFN names (decoders: mlp/down_proj) or without a fused Attention: an explicit
    request for what they lack is an error, and the automatic attempt would only repeat another under a false
    label."""
    if not has_attention:
        if options.fp32_attention:
            raise ExportError(NO_ATTENTION)
        attempts = [a for a in attempts if not Attempt(*a).fp32_attention]
    if has_ffn_outputs:
        return attempts
    if options.keep_ffn_out_fp32:
        raise ExportError(NO_FFN_OUTPUTS)
    return [a for a in attempts if not a[1]]


def sample_texts(texts: list[str], n: int, seed: int) -> list[str]:
    if len(texts) <= n:
        return list(texts)
    return random.Random(seed).sample(texts, n)


def quantize(options: QuantizationOptions, attempt: Attempt, tmp: Path, raw: Path, int8: Path,
             dynamic: Optional[DynamicSource], train_texts: list[str], threads: Optional[int],
             log: Log) -> dict[str, Any]:
    """Write ``int8`` for one attempt (dynamic from ``dynamic``'s graph, or static QDQ from the raw one, calibrated
    on ``train_texts``); return its description for metadata.json."""
    reduce_range, keep_ffn_out, weight_only, fp32_attention = Attempt(*attempt)
    quant: dict[str, Any] = {"mode": options.mode, "per_channel": options.per_channel, "reduce_range": reduce_range,
                             "weight_type": "QInt8", "keep_head_fp32": options.head_fp32,
                             "keep_ffn_out_fp32": keep_ffn_out, "weight_only": weight_only,
                             "fp32_attention": fp32_attention}
    if dynamic is not None:
        # Dynamic INT8 from the fused graph: QAttention and fewer, larger quantized MatMuls.
        excluded = dynamic.excluded + (dynamic.ffn_out if keep_ffn_out else [])
        quant.update(dynamic.changes)
        log(f"quantizing: dynamic INT8 (per_channel={options.per_channel}, reduce_range={reduce_range}, "
            f"head fp32={options.head_fp32}, FFN outputs fp32={keep_ffn_out}, tanh GELU={options.gelu_approximation})")
        if weight_only:
            source = dynamic.graph
            if fp32_attention:
                source = tmp / ".model_unfused_attention.onnx"
                quant["unfused_attention"] = unfused_attention_copy(dynamic.graph, source)
            attention = ("; the attention core fp32 (MultiHeadAttention), its Q/K/V projection a MatMulNBits"
                         if fp32_attention else "; Attention as QAttention" if dynamic.has_attention else "")
            log(f"  the MatMuls as MatMulNBits ({WEIGHT_ONLY['bits']}-bit weights, blocks of "
                f"{WEIGHT_ONLY['block_size']}, int8 compute){attention}")
            matmuls = [n.name for n in onnx_tools.graph_nodes(source) if n.op_type == "MatMul"]
            onnx_tools.quantize_dynamic_int8(source, int8, options.per_channel, reduce_range,
                                             excluded + matmuls + list(dynamic.embedding_nodes))
            if source != dynamic.graph:
                source.unlink()
            quant["matmul_nbits"] = weight_only_matmuls(int8, excluded)
        else:
            onnx_tools.quantize_dynamic_int8(dynamic.graph, int8, options.per_channel, reduce_range,
                                             excluded + list(dynamic.embedding_nodes))
        quant["embedding"] = embedding_step(int8, dynamic.embedding, options.embedding, log)
    else:
        from fenlei.serving.predictor import BundlePredictor

        pre = tmp / ".model_pre.onnx"
        onnx_tools.preprocess_for_static(raw, pre)
        nodes = onnx_tools.graph_nodes(pre)
        excluded = onnx_tools.head_nodes(nodes) if options.head_fp32 else []
        if keep_ffn_out:
            ffn_out = onnx_tools.ffn_output_nodes(nodes)
            if not ffn_out:
                raise ExportError(NO_FFN_OUTPUTS)
            excluded += ffn_out
        encoder = BundlePredictor(tmp, "fp32", threads, building=True)
        texts = sample_texts(train_texts, options.calibration_size, options.seed)
        log(f"quantizing: static QDQ S8S8 ({options.calibration_method}) calibrated on {len(texts)} training texts")
        feeds = onnx_tools.batched_feeds(encoder.encode, texts, 16)
        del encoder
        onnx_tools.quantize_static_int8(pre, int8, feeds, options.per_channel, reduce_range, excluded,
                                        options.calibration_method)
        pre.unlink()
        quant.update({"format": "QDQ", "activation_type": "QInt8", "calibration_texts": len(texts),
                      "calibration_method": options.calibration_method, "from": "unfused graph (quant_pre_process)"})
    quant["nodes_excluded"] = excluded
    return quant


# MatMulNBits settings of the weight-only attempt: symmetric 8-bit weights in blocks of 32 along the input
# dimension, accuracy level 4 (int8 compute: the activations are quantized per block of 32 on the fly).
WEIGHT_ONLY = {"bits": 8, "block_size": 32, "accuracy_level": 4, "is_symmetric": True}


def weight_only_matmuls(int8: Path, excluded: list[str]) -> dict[str, Any]:
    """In place: every MatMul of ``int8`` with a constant weight (not in ``excluded``) becomes a com.microsoft
    MatMulNBits (onnxruntime's MatMulNBitsQuantizer, which needs the onnx-ir package of the deploy extra)."""
    import logging

    import onnx

    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
    except ImportError as err:
        raise ExportError(f"--weight_only_matmuls needs {err.name or 'onnx-ir'}: pip install 'fenlei[deploy]'") from None
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # one INFO line per node otherwise
    quantizer = MatMulNBitsQuantizer(onnx.load(str(int8)), algo_config=DefaultWeightOnlyQuantConfig(**WEIGHT_ONLY),
                                     nodes_to_exclude=excluded)
    quantizer.process()
    model = quantizer.model.model
    onnx.save(model, str(int8))
    return {**WEIGHT_ONLY, "op": "MatMulNBits",
            "nodes": sum(1 for n in model.graph.node if n.op_type == "MatMulNBits")}


def unfused_attention_copy(src: Path, dst: Path) -> dict[str, int]:
    """``src`` with every fused Attention split into MatMul + Split + MultiHeadAttention, written to ``dst``."""
    import onnx

    from fenlei.deploy.unfused_attention import split_attention

    model = onnx.load(str(src))
    counts = split_attention(model)
    if not counts["rewritten"]:
        raise ExportError(NO_ATTENTION)
    onnx.save(model, str(dst))
    return counts


def embedding_step(int8: Path, scheme: Optional[str], asked: str, log: Log) -> dict[str, Any]:
    """Block-quantize the INT8 graph's word-embedding Gather in place; the metadata entry says what happened."""
    import onnx

    if scheme in (None, "none"):
        why = ("fp32 (--embedding_quantization none)" if scheme == "none" else
               f"default dynamic quantization (auto: tables under {embeddings.AUTO_MIN_ROWS} rows, or no Gather table)")
        return {"asked": asked, "scheme": scheme or "default", "note": why}
    model = onnx.load(str(int8))
    entry = embeddings.quantize_gather(model, scheme)
    onnx.save(model, str(int8))
    log(f"  word embedding: GatherBlockQuantized {entry['bits']}-bit, block {entry['block_size']}, {entry['rows']} rows, "
        f"{entry['bytes'] / 1e6:.1f} MB")
    return {"asked": asked, **entry}


def untried_remedies(options: QuantizationOptions, attempts: list[dict[str, Any]]) -> list[str]:
    """The options that can recover INT8 accuracy and were not used: the hints of a failed gate's message."""
    static = options.mode == "static"
    return [hint for hint, missing in (("--per_channel", not options.per_channel),
                                       ("--keep_head_fp32", not options.head_fp32 and static),
                                       ("--reduce_range", not any(a["reduce_range"] for a in attempts)),
                                       ("--keep_ffn_out_fp32", not any(a["keep_ffn_out_fp32"] for a in attempts)),
                                       ("--weight_only_matmuls", not static
                                        and not any(a.get("weight_only") for a in attempts)),
                                       ("--fp32_attention", not static
                                        and not any(a.get("fp32_attention") for a in attempts)),
                                       ("--quantization dynamic", static)) if missing]
