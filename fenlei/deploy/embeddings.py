"""The word-embedding table of a large-vocabulary encoder in the bundle: trimmed to the scripts served, and
block-quantized in the INT8 graph.

Why: multilingual encoders carry one embedding row per piece of ~100 languages. ``multilingual-e5-small`` (XLM-R,
12 x 384) has 250,037 x 384 word embeddings, 96M of its 118M parameters: even at 8 bits the table alone is 96 MB,
four times the rest of the INT8 model. Two levers, both applied to the ONNX graphs so that the bundle's inputs,
tokenizer and serving code stay as they are:

- **Vocabulary trim** (``--vocab_scripts``): keep the rows of the pieces whose letters all belong to the scripts
  served (and the pieces without letters: punctuation, digits, symbols, the special tokens); every other id maps to
  ``<unk>``'s row. The tokenizer is untouched (removing pieces from a unigram model would change how the served
  text is segmented), so the graph gets a small id map (``int32[vocab]``, ~1 MB) in front of the table. The served
  scripts are those of the training texts (``auto``) or named; the parity gate measures the effect on held-out text,
  and ``metadata.json`` records how many held-out texts and tokens it touched.
- **Block-quantized Gather** (``--embedding_quantization``): onnxruntime's ``GatherBlockQuantized`` (com.microsoft)
  reads 8- or 4-bit rows with one scale per block of a row (fp32 per 128 values at 8 bits, fp16 per 16 at
  4 bits) and dequantizes only the rows gathered, so the table
  is stored at 1 or 1/2 byte per value (onnxruntime's own dynamic quantization of a Gather uses one scale for the
  whole table, and its weight-only Gather quantizer writes int4 tensors that need opset 21; this writes uint8 data,
  valid at the bundle's opset 17).

The script of a letter is the first word of its Unicode name (``LATIN``, ``CYRILLIC``; ``CJK`` is ``HAN``), after
width and style words (``FULLWIDTH LATIN ...`` is Latin): Python's ``unicodedata`` has no script property, and for
letters the name is a close stand-in.
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np

from fenlei.deploy.errors import ExportError

EmbeddingQuantization = Literal["auto", "none", "int8", "int4"]
# "auto" block-quantizes tables at least this long: below it, the table is a small part of the model and the
# default dynamic quantization (per-tensor uint8, or QEmbedLayerNormalization) is kept as it always was.
AUTO_MIN_ROWS = 100_000
# Values per scale along a row (384 = 3 x 128 = 24 x 16), and the scales' type. int4 takes small blocks with fp16
# scales: the same 0.625 bytes a value as blocks of 32 with fp32 scales, and on multilingual-e5-small (online_shopping,
# 1,001 held-out texts, every other weight fp32) the lookup alone moves 0.2% of the argmax decisions instead of 1.1%
# (benchmarks/int8_parts.py). fp16 keeps a scale to 3 significant digits, far finer than a 4-bit step.
BLOCK_SIZE = {"int8": 128, "int4": 16}
SCALE_DTYPE = {"int8": np.float32, "int4": np.float16}
# A script served by "auto": at least this share of the training texts' letters (1.6% of demo_tickets_zh's letters
# are Latin: product names, "ok", "app"; a stray Greek letter in a handful of texts does not make Greek served).
AUTO_SCRIPT_MIN_SHARE = 0.002
_STYLE_WORDS = {"FULLWIDTH", "HALFWIDTH", "MODIFIER", "MATHEMATICAL", "CIRCLED", "PARENTHESIZED", "SMALL",
                "SQUARED", "NEGATIVE", "DOUBLE-STRUCK"}


def letter_script(ch: str) -> Optional[str]:
    """The script of a letter (``HAN``, ``LATIN``, ...), None for anything that is not a letter."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    words = unicodedata.name(ch, "UNKNOWN").split()
    while len(words) > 1 and words[0] in _STYLE_WORDS:
        words = words[1:]
    return "HAN" if words[0] == "CJK" else words[0]


def text_scripts(texts: Iterable[str]) -> Counter:
    return Counter(s for t in texts for ch in t if (s := letter_script(ch)))


@functools.cache
def known_scripts() -> frozenset[str]:
    """Every script name :func:`letter_script` can give (one pass over Unicode, only when names are given)."""
    return frozenset(s for cp in range(sys.maxunicode + 1) if (s := letter_script(chr(cp))))


def served_scripts(names: Sequence[str], train_texts: Sequence[str]) -> list[str]:
    """``names`` in upper case, or with ``auto`` the scripts of at least AUTO_SCRIPT_MIN_SHARE of the letters of
    ``train_texts``. A name that is no script is an error (it would silently map every piece to ``<unk>``)."""
    wanted = {n.upper() for n in names if n.lower() != "auto"}
    unknown = sorted(wanted - known_scripts())
    if unknown:
        raise ExportError(f"--vocab_scripts: unknown script(s) {unknown}; scripts are the first word of a letter's "
                          "Unicode name, e.g. HAN LATIN CYRILLIC ARABIC (or auto)")
    if any(n.lower() == "auto" for n in names):
        counts = text_scripts(train_texts)
        total = sum(counts.values()) or 1
        wanted |= {s for s, c in counts.items() if c / total >= AUTO_SCRIPT_MIN_SHARE}
    return sorted(wanted)


def kept_ids(pieces: Sequence[Optional[str]], scripts: Iterable[str], special_ids: Iterable[int], unk_id: int) -> np.ndarray:
    """Sorted ids of the pieces to keep: the special tokens, ``<unk>``, and every piece whose letters (if any) are
    all in ``scripts``. An id without a piece (None: a gap in the tokenizer's vocabulary, which no text tokenizes
    to) is dropped."""
    scripts = set(scripts)
    keep = {int(i) for i in special_ids} | {int(unk_id)}
    for i, piece in enumerate(pieces):
        if piece is not None and all(s in scripts for ch in piece if (s := letter_script(ch))):
            keep.add(i)
    return np.asarray(sorted(keep), dtype=np.int64)


def id_map(kept: np.ndarray, rows: int, unk_id: int) -> np.ndarray:
    """``int32[rows]``: old id -> row of the trimmed table; dropped ids -> ``<unk>``'s row."""
    mapping = np.full(rows, int(np.searchsorted(kept, unk_id)), dtype=np.int32)
    mapping[kept] = np.arange(len(kept), dtype=np.int32)
    return mapping


# ------------------------------------------------------------------------------------------------ graph


@dataclass
class WordEmbedding:
    node: Any  # the Gather (default domain) that reads the table
    table: Any  # its initializer, (rows, hidden) float


def find_word_embedding(model: Any) -> Optional[WordEmbedding]:
    """The Gather that looks up ``input_ids`` (directly or through a Cast) in a 2-D float initializer; the one with
    the most rows if several. None when the table sits inside a fused EmbedLayerNormalization or is absent."""
    from onnx import TensorProto

    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}

    def from_input_ids(name: str) -> bool:
        for _ in range(3):  # input_ids, or a Cast/Gather-remap of it
            if name == "input_ids":
                return True
            node = producers.get(name)
            if node is None or node.op_type not in ("Cast", "Gather"):
                return False
            name = node.input[0] if node.op_type == "Cast" else node.input[1]
        return False

    best: Optional[WordEmbedding] = None
    for node in model.graph.node:
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or node.input[0] not in inits:
            continue
        table = inits[node.input[0]]
        if (len(table.dims) == 2 and table.data_type == TensorProto.FLOAT and from_input_ids(node.input[1])
                and (best is None or table.dims[0] > best.table.dims[0])):
            best = WordEmbedding(node, table)
    return best


def trim_graph(model: Any, kept: np.ndarray, unk_id: int) -> dict[str, Any]:
    """In place: the word table keeps the ``kept`` rows and its Gather reads ids through an id map. Returns what
    was done (for metadata.json)."""
    from onnx import helper, numpy_helper

    found = find_word_embedding(model)
    if found is None:
        raise ValueError("no word-embedding Gather on input_ids in the graph")
    table = numpy_helper.to_array(found.table)
    rows = table.shape[0]
    if kept.max() >= rows:
        raise ValueError(f"kept id {int(kept.max())} outside the {rows}-row table")
    trimmed = numpy_helper.from_array(np.ascontiguousarray(table[kept]), found.table.name)
    found.table.CopyFrom(trimmed)
    map_name = f"{found.table.name}/id_map"
    model.graph.initializer.append(numpy_helper.from_array(id_map(kept, rows, unk_id), map_name))
    remapped = f"{found.node.input[1]}/trimmed_ids"
    remap = helper.make_node("Gather", [map_name, found.node.input[1]], [remapped], name=f"{found.node.name}/id_map",
                             axis=0)
    index = list(model.graph.node).index(found.node)
    model.graph.node.insert(index, remap)
    found.node.input[1] = remapped
    return {"rows_before": int(rows), "rows_after": int(len(kept)), "node": found.node.name}


def block_quantize(table: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-block quantization of each row: uint8 codes (two 4-bit codes a byte, low bits first, for
    ``bits=4``) around GatherBlockQuantized's default zero point 2**(bits-1), and fp32 scales (rows, hidden/block)."""
    rows, hidden = table.shape
    if hidden % block_size:
        raise ValueError(f"hidden size {hidden} is not a multiple of the block size {block_size}")
    qmax = 2 ** (bits - 1) - 1
    blocks = table.reshape(rows, hidden // block_size, block_size).astype(np.float32)
    scales = np.abs(blocks).max(axis=2) / qmax
    safe = np.where(scales == 0, 1.0, scales)[..., None]
    codes = (np.clip(np.rint(blocks / safe), -qmax, qmax) + 2 ** (bits - 1)).astype(np.uint8).reshape(rows, hidden)
    if bits == 4:
        codes = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    return codes, scales.astype(np.float32)


def dequantize(codes: np.ndarray, scales: np.ndarray, bits: int, block_size: int) -> np.ndarray:
    """What GatherBlockQuantized computes for every row (the reference the tests compare it with)."""
    if bits == 4:
        codes = np.stack([codes & 0x0F, codes >> 4], axis=2).reshape(codes.shape[0], -1)
    values = codes.astype(np.float32) - 2 ** (bits - 1)
    # In the scales' type, as the kernel computes (fp16 scales give fp16 rows, cast to fp32 after).
    return (values.astype(scales.dtype) * np.repeat(scales, block_size, axis=1)).astype(np.float32)


def quantize_gather(model: Any, scheme: str, block_size: Optional[int] = None,
                    scale_dtype: Optional[type] = None) -> dict[str, Any]:
    """In place: the word-embedding Gather becomes a GatherBlockQuantized of ``scheme`` (``int8``/``int4``); with
    fp16 scales (int4) it gathers fp16 rows and a Cast gives the graph the fp32 values it had. ``block_size`` and
    ``scale_dtype`` override the scheme's (benchmarks/int8_parts.py compares them)."""
    from onnx import TensorProto, helper, numpy_helper

    found = find_word_embedding(model)
    if found is None:
        raise ValueError("no word-embedding Gather on input_ids in the graph")
    bits = 8 if scheme == "int8" else 4
    block, scale_dtype = block_size or BLOCK_SIZE[scheme], scale_dtype or SCALE_DTYPE[scheme]
    table = numpy_helper.to_array(found.table)
    codes, scales = block_quantize(table, bits, block)
    scales = scales.astype(scale_dtype)
    name = found.table.name
    model.graph.initializer.remove(found.table)
    model.graph.initializer.extend([numpy_helper.from_array(codes, f"{name}/q{bits}"),
                                    numpy_helper.from_array(scales, f"{name}/scales")])
    outputs = list(found.node.output)
    half = scale_dtype == np.float16
    gathered = [f"{outputs[0]}/fp16"] if half else outputs
    nodes = [helper.make_node("GatherBlockQuantized", [f"{name}/q{bits}", found.node.input[1], f"{name}/scales"],
                              gathered, name=f"{found.node.name}/block_quantized", domain="com.microsoft",
                              gather_axis=0, quantize_axis=1, block_size=block, bits=bits)]
    if half:
        nodes.append(helper.make_node("Cast", gathered, outputs, name=f"{found.node.name}/block_quantized/cast",
                                      to=TensorProto.FLOAT))
    index = list(model.graph.node).index(found.node)
    model.graph.node.remove(found.node)
    for offset, node in enumerate(nodes):
        model.graph.node.insert(index + offset, node)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return {"scheme": scheme, "op": "GatherBlockQuantized", "bits": bits, "block_size": block,
            "scale_type": np.dtype(scale_dtype).name, "rows": int(table.shape[0]),
            "bytes": int(codes.nbytes + scales.nbytes),
            "max_abs_error": float(np.max(np.abs(dequantize(codes, scales, bits, block) - table)))}


def resolve_scheme(scheme: EmbeddingQuantization, rows: Optional[int]) -> Optional[str]:
    """The block scheme to apply (``int8``/``int4``), ``none`` (the table stays fp32), or None: leave the table to
    the default dynamic quantization (``auto`` below AUTO_MIN_ROWS, or a graph without a Gather table)."""
    if rows is None:
        return None
    if scheme == "auto":
        return "int8" if rows >= AUTO_MIN_ROWS else None
    return scheme
