"""Exact rewrites of a fused transformer graph that make onnxruntime's CPU kernels faster at small batch.

Run after ``onnxruntime.transformers.optimizer`` (which fuses BERT-like graphs) and before quantization. Each rewrite
keeps the maths the same (only float rounding differs); what changes is which CPU kernels run:

- ``SkipLayerNormalization`` -> ``Add`` (+ ``Add``) + ``LayerNormalization``. On onnxruntime 1.32's CPU provider the
  fused contrib kernel was 2.5-4.5x slower than the two standard ops it replaces on a 20 x 384 input
  (``benchmarks/kernel_costs.py``). The bias is added first, straight onto the dense MatMul's output, so that
  onnxruntime folds it into the (quantized) matrix product instead of running it as a separate op.
- ``BiasGelu`` -> ``Add`` + ``Gelu``: the same bias folding; ``Gelu`` stays exact (erf), no tanh approximation.
- ``EmbedLayerNormalization`` with constant-zero token types: row 0 of the token-type table is added to the
  position table once, offline, and the ~15 shape/gather/expand nodes that computed the zeros are removed. Only
  done after checking that the segment ids depend on the inputs' shapes alone and are zero.

onnxruntime would fuse the first two back at session creation; the sessions that load a bundle therefore disable
those fusions (:data:`DISABLED_ORT_FUSIONS`, also written into the bundle's metadata.json).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

# onnxruntime graph transformers that would undo the rewrites at session creation.
DISABLED_ORT_FUSIONS = ("SkipLayerNormFusion", "BiasGeluFusion")
_MATMUL_OPS = {"MatMul", "Gemm", "FusedMatMul"}


def _consumers(nodes: Iterable[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            if name:
                out.setdefault(name, []).append(node)
    return out


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _split_skip_layer_norm(node: Any, producers: dict[str, Any], used: set[str]) -> list[Any] | None:
    """``SkipLayerNormalization`` as Add(s) + LayerNormalization, or None when its statistics outputs are used."""
    from onnx import helper

    outputs = list(node.output) + [""] * (4 - len(node.output))
    if outputs[1] in used or outputs[2] in used:  # mean / inv_std: no standard-op equivalent worth building
        return None
    x, skip, gamma = node.input[0], node.input[1], node.input[2]
    beta = node.input[3] if len(node.input) > 3 else ""
    bias = node.input[4] if len(node.input) > 4 else ""
    # The operand that comes straight out of a matrix product takes the bias, so that the Add folds into it.
    if producers.get(skip) is not None and producers[skip].op_type in _MATMUL_OPS and (
            producers.get(x) is None or producers[x].op_type not in _MATMUL_OPS):
        x, skip = skip, x
    name = node.name or outputs[0]
    summed = outputs[3] if outputs[3] in used else f"{name}/skip_sum"
    new = []
    if bias:
        new.append(helper.make_node("Add", [x, bias], [f"{name}/biased"], name=f"{name}/add_bias"))
        x = f"{name}/biased"
    new.append(helper.make_node("Add", [x, skip], [summed], name=f"{name}/add_skip"))
    ln_inputs = [summed, gamma] + ([beta] if beta else [])
    new.append(helper.make_node("LayerNormalization", ln_inputs, [outputs[0]], name=f"{name}/layer_norm", axis=-1,
                                epsilon=float(_attr(node, "epsilon", 1e-12))))
    return new


def _split_bias_gelu(node: Any) -> list[Any]:
    from onnx import helper

    name = node.name or node.output[0]
    return [helper.make_node("Add", list(node.input), [f"{name}/biased"], name=f"{name}/add_bias"),
            helper.make_node("Gelu", [f"{name}/biased"], list(node.output), name=f"{name}/gelu", domain="com.microsoft")]


def _ancestors(model: Any, tensor: str) -> list[Any]:
    producers = {o: n for n in model.graph.node for o in n.output if o}
    seen: set[int] = set()
    stack, out = [tensor], []
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        out.append(node)
        stack.extend(i for i in node.input if i)
    return out


def segment_ids_are_constant_zero(model: Any, tensor: str) -> tuple[bool, str]:
    """Whether ``tensor`` (an EmbedLayerNormalization's segment ids) is zero for every input of every shape.

    Structural check: the graph inputs reach it only through ``Shape`` nodes, so its value can depend on the
    inputs' shapes, never on their content. Then evaluated with onnxruntime at two shapes: all zeros. (Segment ids
    are int32, as EmbedLayerNormalization requires.)
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper

    inputs = {i.name: i for i in model.graph.input}
    nodes = _ancestors(model, tensor)
    for node in nodes:
        direct = [i for i in node.input if i in inputs]
        if direct and node.op_type != "Shape":
            return False, f"{node.op_type} node {node.name!r} reads graph input {direct[0]!r}"
    order = {id(n): k for k, n in enumerate(model.graph.node)}
    nodes.sort(key=lambda n: order[id(n)])
    needed = {i for n in nodes for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in needed]
    graph_inputs = [i for i in model.graph.input if i.name in needed]
    graph = helper.make_graph(nodes, "segment_ids", graph_inputs,
                              [helper.make_tensor_value_info(tensor, onnx.TensorProto.INT32, None)], inits)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    sess = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in ((1, 7), (3, 13)):
        feeds = {i.name: rng.integers(1, 100, size=shape, dtype=np.int64) for i in sess.get_inputs()}
        value = sess.run(None, feeds)[0]
        if value.shape != shape or np.any(value != 0):
            return False, f"segment ids are not all zero for inputs of shape {shape}"
    return True, "shape-only and zero"


def _fold_zero_segment(model: Any, node: Any, inits: dict[str, Any], uses: dict[str, list[Any]]) -> Any:
    """EmbedLayerNormalization without segment inputs; token-type row 0 added into the position table."""
    from onnx import helper, numpy_helper

    pos_name, seg_table = node.input[3], node.input[4]
    position = numpy_helper.to_array(inits[pos_name]).astype(np.float32)
    segment_row = numpy_helper.to_array(inits[seg_table])[0].astype(np.float32)
    folded = f"{pos_name}/plus_token_type_0" if len(uses.get(pos_name, [])) > 1 else pos_name
    tensor = numpy_helper.from_array(position + segment_row, folded)
    if folded in inits:
        inits[folded].CopyFrom(tensor)
    else:
        model.graph.initializer.append(tensor)
    new_inputs = list(node.input)
    new_inputs[1], new_inputs[3], new_inputs[4] = "", folded, ""
    while new_inputs and not new_inputs[-1]:
        new_inputs.pop()
    new = helper.make_node(node.op_type, new_inputs, list(node.output), name=node.name, domain=node.domain)
    new.attribute.extend(node.attribute)
    return new


def _prune(model: Any) -> None:
    """Drop nodes whose outputs nobody uses and initializers no node reads."""
    needed = {o.name for o in model.graph.output}
    keep = []
    for node in reversed(list(model.graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del model.graph.node[:]
    model.graph.node.extend(keep)
    unused = [t for t in model.graph.initializer if t.name not in needed]
    for t in unused:
        model.graph.initializer.remove(t)


def approximate_gelu(model: Any) -> int:
    """Turn onnxruntime's exact ``Gelu`` / ``BiasGelu`` (erf) into ``FastGelu`` (tanh approximation) in place.

    Used for the INT8 graph only (``--gelu_approximation``): the approximation differs from the erf form by at most
    about 3e-4, two orders of magnitude under the INT8 activation step, and its CPU kernel is cheaper. Returns the
    number of nodes changed.
    """
    changed = 0
    for node in model.graph.node:
        if node.domain == "com.microsoft" and node.op_type in ("Gelu", "BiasGelu"):
            node.op_type = "FastGelu"
            changed += 1
    return changed


def rewrite_for_cpu(model: Any) -> dict[str, Any]:
    """Apply the rewrites in place to an ``onnx.ModelProto``; return what was done (for metadata.json)."""
    from onnx import helper

    nodes = list(model.graph.node)
    uses = _consumers(nodes)
    used = set(uses) | {o.name for o in model.graph.output}
    producers = {o: n for n in nodes for o in n.output if o}
    inits = {t.name: t for t in model.graph.initializer}
    report: dict[str, Any] = {"SkipLayerNormalization_split": 0, "BiasGelu_split": 0, "token_type_folded": False}
    rewritten = []
    for node in nodes:
        new = None
        if node.op_type == "SkipLayerNormalization" and node.domain == "com.microsoft":
            new = _split_skip_layer_norm(node, producers, used)
            report["SkipLayerNormalization_split"] += new is not None
        elif node.op_type == "BiasGelu" and node.domain == "com.microsoft":
            new = _split_bias_gelu(node)
            report["BiasGelu_split"] += 1
        elif (node.op_type == "EmbedLayerNormalization" and len(node.input) > 4 and node.input[1] and node.input[4]
              and node.input[3] in inits and node.input[4] in inits):
            ok, why = segment_ids_are_constant_zero(model, node.input[1])
            report["token_type_folded"] = ok
            if not ok:
                report["token_type_kept"] = why
            else:
                new = [_fold_zero_segment(model, node, inits, uses)]
        rewritten.extend(new if new is not None else [node])
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    _prune(model)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    report["num_nodes"] = len(model.graph.node)
    return report
