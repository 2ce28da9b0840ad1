"""Linear probe: padding-independent pooling, the feature cache is reused (no forward on the second run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fenlei.probe import features as feat
from fenlei.probe.run import main, probe
from tests.conftest import fenlei_user_error
from tests.decoder_support import make_tokenizer, write_tiny_decoder


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_decoder(tmp_path_factory.mktemp("tiny_llama_probe"), "llama")


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
@pytest.mark.parametrize("pooling", ["mean", "last", "first"])
def test_left_and_right_padding_give_the_same_features(kind, pooling, tmp_path):
    folder = write_tiny_decoder(tmp_path / kind, kind)
    model = feat.load_backbone(str(folder))
    texts = ["my card was charged twice refund", "login", "the package is very late again please help"]
    out = {}
    for side in ("left", "right"):
        tok = make_tokenizer()
        tok.padding_side = side
        out[side] = feat.extract(model, tok, texts, layer=0.5, pooling=pooling, max_length=32, batch_size=3)
    one_by_one = np.concatenate([feat.extract(model, make_tokenizer(), [t], 0.5, pooling, 32) for t in texts])
    np.testing.assert_allclose(out["left"], out["right"], atol=1e-5)
    np.testing.assert_allclose(out["left"], one_by_one, atol=1e-5)


def test_pooling_ignores_padded_positions():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]])
    assert feat.pool(hidden, mask, "mean")[:, 0].tolist() == [1.5, 5.5]
    assert feat.pool(hidden, mask, "last")[:, 0].tolist() == [2.0, 7.0]
    assert feat.pool(hidden, mask, "first")[:, 0].tolist() == [1.0, 4.0]


def test_resolve_layer():
    assert feat.resolve_layer(0.5, 12) == 6 and feat.resolve_layer(1.0, 12) == 12 and feat.resolve_layer(-1, 12) == 12
    assert feat.resolve_layer(0, 12) == 0
    with pytest.raises(ValueError):
        feat.resolve_layer(13, 12)
    with pytest.raises(ValueError):
        feat.resolve_layer(1.5, 12)


def test_probe_reuses_cached_features(tiny_llama, tiny_data, tmp_path, monkeypatch):
    calls = {"load": 0, "forward": 0}
    original = feat.load_backbone

    def counting_loader(name, device="cpu"):
        calls["load"] += 1
        model = original(name, device)
        model.register_forward_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1))
        return model

    monkeypatch.setattr(feat, "load_backbone", counting_loader)
    argv = ["--model", str(tiny_llama), "--data_dir", str(tiny_data), "--layer", "-1", "--pooling", "mean",
            "--head", "logreg", "mlp", "--mlp_epochs", "20", "--cache_dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "report.json")]
    assert main(argv) == 0
    first = json.loads((tmp_path / "report.json").read_text())
    assert calls["load"] == 1 and calls["forward"] > 0  # train, validation and test extracted, one model load
    assert first["extraction"]["train"]["from_cache"] is False
    assert first["extraction"]["train"]["examples_per_s"] > 0
    forwards = calls["forward"]
    settings = {"model": str(tiny_llama), "data_dir": str(tiny_data), "layer": -1, "pooling": "mean",
                "head": ["logreg", "mlp"], "mlp_epochs": 20, "cache_dir": str(tmp_path / "cache")}
    second = probe(**settings, class_weight="balanced")
    assert calls["forward"] == forwards and calls["load"] == 1  # the model never ran again
    assert second["extraction"]["test"]["from_cache"] is True
    for head in ("logreg", "mlp"):
        assert 0.0 <= second["heads"][head]["accuracy"] <= 1.0
    # Different pooling: a different cache entry, so the model runs again.
    probe(**{**settings, "pooling": "last"})
    assert calls["forward"] > forwards


def test_probe_learns_tiny_data_from_frozen_random_model(tiny_llama, tiny_data, tmp_path):
    """Class words survive mean pooling even through a random model: the probe must beat chance (0.25) clearly."""
    report = probe(model=str(tiny_llama), data_dir=str(tiny_data), layer=0, cache_dir=str(tmp_path / "c"), C=10)
    assert report["heads"]["logreg"]["accuracy"] >= 0.6


def test_probe_bad_data_dir_exits_2(tmp_path, capsys):
    error = fenlei_user_error(["probe", "--model", "x", "--data_dir", str(tmp_path)], capsys)
    assert f"train_file: no file 'train' in data_dir {str(tmp_path)!r}" in error


def test_probe_on_an_encoder(tiny_model, tiny_data, tmp_path):
    """The probe takes encoders too (BERT here, CLS = first-token pooling)."""
    report = probe(model=str(tiny_model), data_dir=str(tiny_data), layer=-1, pooling="first",
                   cache_dir=str(tmp_path / "c"))
    assert report["extraction"]["train"]["dim"] == 32 and report["extraction"]["train"]["num_layers"] == 2
    assert 0.0 <= report["heads"]["logreg"]["accuracy"] <= 1.0


def test_probe_device_is_checked_before_any_data_or_model(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from fenlei.probe.run import check_device

    # No data_dir: a device error must come first, before the missing train file is noticed.
    error = fenlei_user_error(["probe", "--model", "m", "--device", "gpu"], capsys)
    assert error == "fenlei: error: --device: expected auto, cpu, cuda or cuda:N, got 'gpu'"
    if not torch.cuda.is_available():
        assert "torch sees no CUDA GPU" in fenlei_user_error(["probe", "--model", "m", "--device", "cuda"], capsys)
    assert check_device("cpu") == "cpu" and check_device("auto") == "auto"
