"""Attention -> MatMul + Split + MultiHeadAttention: the input projection as a plain MatMul, the attention core fp32.

Why: dynamic INT8 turns onnxruntime's fused ``Attention`` into ``QAttention``, which quantizes the packed Q/K/V
projection with one activation scale per tensor. On multilingual-e5-small that alone costs about 1.2 points of
argmax agreement with fp32 (``benchmarks/int8_parts.py``, docs/deployment.md). Excluding ``Attention`` from
quantization keeps the core exact but leaves its 3 x 384 x 384 weights per layer in fp32 (+16 MB). This rewrite
moves the packed projection out into a ``MatMul`` (which onnxruntime's MatMulNBits quantizer then stores as 8-bit
blocks of 32 values with a scale each) and computes the attention itself with the fp32 ``MultiHeadAttention``
contrib op, which takes the separate Q, K and V, the packed bias and the same mask.

Exact up to float rounding: ``MultiHeadAttention`` with Q, K, V = the three thirds of ``input @ W`` and the packed
bias is the computation ``Attention`` performs (the same default scale 1/sqrt(head size), the same mask and
``mask_filter_value``). Nodes with settings the rewrite does not carry over (past state, unidirectional, unequal
Q/K/V sizes, an attention bias) are left fused and counted under ``skipped``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_CARRIED_ATTRIBUTES = {"num_heads", "mask_filter_value", "scale"}


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _rewritable(node: Any, inits: dict[str, Any]) -> bool:
    attrs = _attributes(node)
    if set(attrs) - _CARRIED_ATTRIBUTES - {"qkv_hidden_sizes", "unidirectional", "do_rotary", "past_present_share_buffer"}:
        return False
    if attrs.get("unidirectional", 0) or attrs.get("do_rotary", 0) or attrs.get("past_present_share_buffer", 0):
        return False
    sizes = attrs.get("qkv_hidden_sizes")
    if sizes is not None and len(set(sizes)) != 1:
        return False
    inputs = list(node.input) + [""] * (4 - len(node.input))
    if any(name for name in node.input[4:]):  # past, attention_bias, past_sequence_length
        return False
    weight = inits.get(inputs[1])
    return weight is not None and len(weight.dims) == 2 and weight.dims[1] % 3 == 0 and bool(inputs[2])


def split_attention(model: Any) -> dict[str, int]:
    """In place: every rewritable com.microsoft ``Attention`` of ``model`` (an ``onnx.ModelProto``) becomes
    ``MatMul(input, W)`` -> ``Split`` into Q, K, V -> ``MultiHeadAttention(Q, K, V, bias, mask)``. Returns
    ``{"rewritten": n, "skipped": m}``."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    new_nodes: list[Any] = []
    rewritten = skipped = 0
    for node in graph.node:
        if node.op_type != "Attention" or node.domain != "com.microsoft":
            new_nodes.append(node)
            continue
        if not _rewritable(node, inits):
            skipped += 1
            new_nodes.append(node)
            continue
        name = node.name or f"Attention_{rewritten}"
        inputs = list(node.input) + [""] * (4 - len(node.input))
        hidden3 = int(inits[inputs[1]].dims[1])
        split_sizes = f"{name}_split_sizes"
        graph.initializer.append(numpy_helper.from_array(np.full(3, hidden3 // 3, dtype=np.int64), split_sizes))
        packed, q, k, v = (f"{name}_{part}" for part in ("qkv", "q", "k", "v"))
        new_nodes.append(helper.make_node("MatMul", [inputs[0], inputs[1]], [packed], name=f"{name}_qkv_matmul"))
        new_nodes.append(helper.make_node("Split", [packed, split_sizes], [q, k, v], name=f"{name}_qkv_split", axis=-1))
        attrs = {key: value for key, value in _attributes(node).items() if key in _CARRIED_ATTRIBUTES}
        mha_inputs = [q, k, v, inputs[2], inputs[3]]
        while mha_inputs and not mha_inputs[-1]:
            mha_inputs.pop()
        new_nodes.append(helper.make_node("MultiHeadAttention", mha_inputs, [node.output[0]], name=f"{name}_mha",
                                          domain="com.microsoft", **attrs))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    return {"rewritten": rewritten, "skipped": skipped}
