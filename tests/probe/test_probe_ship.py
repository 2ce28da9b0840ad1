"""The probe as a model to ship: several layers from one forward pass, the sweep and its selection, the saved probe
(file set, checks, model identity), `fenlei predict --probe` and `fenlei infer --probe` giving the probe's own test
predictions, the progress bar, and the shipped configs/probe/*.yaml."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from fenlei.commands import main as fenlei
from fenlei.probe import features as feat
from fenlei.probe.run import probe
from fenlei.probe.store import load_probe
from tests.conftest import REPO_ROOT, fenlei_user_error, make_rows, write_jsonl
from tests.decoder_support import make_tokenizer, write_tiny_decoder

PROBE_CONFIGS = sorted((REPO_ROOT / "configs" / "probe").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_decoder(tmp_path_factory.mktemp("tiny_llama_ship"), "llama")


def run_fenlei(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        fenlei(argv)
    return info.value.code


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count model loads and forward passes of the feature extractor."""
    calls = {"load": 0, "forward": 0}
    original = feat.load_backbone

    def loader(name, device="cpu"):
        calls["load"] += 1
        model = original(name, device)
        model.register_forward_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1))
        return model

    monkeypatch.setattr(feat, "load_backbone", loader)
    return calls


def test_one_forward_gives_the_features_of_every_layer(tiny_llama: Path) -> None:
    model = feat.load_backbone(str(tiny_llama))
    calls = {"forward": 0}
    model.register_forward_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1))
    texts = ["my card was charged twice refund", "login", "the package is very late again please help", "crash"]
    together = feat.extract_layers(model, make_tokenizer(), texts, [0, 0.5, -1, 1.0], "mean", 32, batch_size=2)
    assert calls["forward"] == 2  # one pass per batch for all four layers
    for layer, got in zip([0, 0.5, -1, 1.0], together, strict=True):
        np.testing.assert_allclose(got, feat.extract(model, make_tokenizer(), texts, layer, "mean", 32, 2), atol=1e-6)
    assert not np.allclose(together[0], together[2])  # the embeddings are not the last block
    np.testing.assert_array_equal(together[2], together[3])  # -1 and 1.0 both name the last block


def test_layer_sweep_in_one_run_selects_by_validation(tiny_llama, tiny_data, tmp_path, monkeypatch, capsys):
    calls = counting(monkeypatch)
    report = probe(model=str(tiny_llama), data_dir=str(tiny_data), layers=[0, 0.5, -1], head=["logreg", "mlp"],
                   mlp_epochs=5, cache_dir=str(tmp_path / "cache"), C=10)
    # One model load; one pass over each file (64 + 16 + 16 texts in batches of 16), not one per layer.
    assert calls["load"] == 1 and calls["forward"] == 4 + 1 + 1
    rows = report["sweep"]
    assert [(r["layer"], r["head"]) for r in rows] == [(0, "logreg"), (0, "mlp"), (0.5, "logreg"), (0.5, "mlp"),
                                                        (-1, "logreg"), (-1, "mlp")]
    assert [r["layer_index"] for r in rows] == [0, 0, 1, 1, 2, 2]
    best = max(rows, key=lambda r: (r["val_f1_macro"], r["val_accuracy"]))
    assert [r for r in rows if r["selected"]] == [best]
    assert (report["selected"]["layer"], report["selected"]["head"]) == (best["layer"], best["head"])
    assert report["validation"] == {"source": "file", "path": str(tiny_data / "validation.jsonl"), "num_examples": 16}
    err = capsys.readouterr().err
    assert "| layer | hidden_states index | head | val accuracy" in err and "probe: selected layer" in err
    assert "probe: train: 64 texts, 3 layer(s) from one pass" in err
    # A later run with one of those layers reads the cache: the model is never loaded again.
    again = probe(model=str(tiny_llama), data_dir=str(tiny_data), layer=0.5, cache_dir=str(tmp_path / "cache"),
                  C=10, quiet=True)
    assert calls["load"] == 1 and again["extraction"]["test"]["from_cache"] is True
    assert again["heads"]["logreg"]["accuracy"] == report["by_layer"]["0.5"]["heads"]["logreg"]["accuracy"]
    assert "probe:" not in capsys.readouterr().err  # --quiet: no messages


def test_held_out_validation_without_a_validation_file(tiny_llama, tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", make_rows(60, seed=1))
    write_jsonl(data / "test.jsonl", make_rows(12, seed=3))
    report = probe(model=str(tiny_llama), data_dir=str(data), layers=[0, -1], cache_dir=str(tmp_path / "c"),
                   val_fraction=0.2, quiet=True)
    assert report["validation"] == {"source": "held out of train", "fraction": 0.2, "seed": 0, "num_examples": 12}
    assert report["selected"]["validation"]["num_examples"] == 12


def test_several_candidates_without_validation_is_refused(tiny_llama, tmp_path, capsys):
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", make_rows(20, seed=1))
    write_jsonl(data / "test.jsonl", make_rows(8, seed=3))
    error = fenlei_user_error(["probe", "--model", str(tiny_llama), "--data_dir", str(data), "--layers", "0", "-1",
                               "--val_fraction", "0"], capsys)
    assert "choosing among 2 layer/head candidates needs validation data" in error
    error = fenlei_user_error(["probe", "--model", "m", "--layer", "0", "--layers", "0", "-1"], capsys)
    assert error == "fenlei: error: --layer and --layers: give one (--layers 0.25 0.5 -1 sweeps several)"
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def saved(tiny_llama: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A probe saved by the command line, sweeping two layers."""
    root = tmp_path_factory.mktemp("saved_probe")
    argv = ["probe", "--model", str(tiny_llama), "--data_dir", str(tiny_data), "--layers", "0", "-1",
            "--cache_dir", str(root / "cache"), "--run_dir", str(root / "probe"), "--C", "10", "--quiet"]
    assert run_fenlei(argv) == 0
    return root / "probe"


def test_saved_probe_holds_its_settings_labels_and_calibration(saved: Path, tiny_llama: Path) -> None:
    assert {"probe.json", "head.npz", "labels.json", "calibration.json", "report.json", "sweep.md", "test"} <= \
        {p.name for p in saved.iterdir()}
    manifest = json.loads((saved / "probe.json").read_text())
    assert manifest["model"]["name"] == str(tiny_llama) and len(manifest["model"]["sha256"]) == 64
    report = json.loads((saved / "report.json").read_text())
    assert manifest["features"]["layer"] == report["selected"]["layer"]
    assert {k: manifest["features"][k] for k in ("pooling", "max_length", "text_fields")} == \
        {"pooling": "mean", "max_length": 128, "text_fields": ["text"]}
    assert json.loads((saved / "labels.json").read_text()) == ["billing", "bug", "login", "shipping"]
    loaded = load_probe(saved)
    assert loaded.temperature == json.loads((saved / "calibration.json").read_text())["temperature"] > 0
    with np.load(saved / "head.npz", allow_pickle=False) as npz:  # plain arrays: nothing to unpickle
        assert set(npz.files) == {"mean", "std", "coef", "intercept", "classes"}
    assert "| yes |" in (saved / "sweep.md").read_text()


def _same_predictions(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected) > 0
    for g, e in zip(got, expected, strict=True):
        assert g["predicted_label"] == e["predicted_label"] and g["label"] == e["label"]
        assert g["confidence"] == pytest.approx(e["confidence"], abs=2e-6)
        assert [t["label"] for t in g["top_k"]] == [t["label"] for t in e["top_k"]]


def test_predict_and_infer_give_the_probes_own_test_predictions(saved: Path, tiny_data: Path, tmp_path: Path):
    expected = rows_of(saved / "test" / "predictions.jsonl")
    assert [r["true_label"] for r in expected] == [r["label"] for r in rows_of(tiny_data / "test.jsonl")]
    assert run_fenlei(["predict", "--probe", str(saved), "--quiet"]) == 0
    predicted = rows_of(saved / "predict" / "predictions.jsonl")
    assert [r["row"] for r in predicted] == list(range(len(expected)))
    assert [{k: v for k, v in r.items() if k != "true_label"} for r in expected] == predicted  # to the 6th digit
    out = tmp_path / "infer.jsonl"
    assert run_fenlei(["infer", "--probe", str(saved), "--input", str(tiny_data / "test.jsonl"), "--output", str(out),
                       "--no_progress"]) == 0
    inferred = rows_of(out)
    assert [r["id"] for r in inferred] == [r["id"] for r in rows_of(tiny_data / "test.jsonl")]
    _same_predictions(inferred, expected)


def test_an_mlp_probe_on_an_encoder_predicts_as_it_tested(tiny_model, tiny_data, tmp_path):
    run_dir = tmp_path / "probe"
    probe(model=str(tiny_model), data_dir=str(tiny_data), layer=-1, pooling="first", head=["mlp"], mlp_epochs=10,
          cache_dir=str(tmp_path / "c"), run_dir=str(run_dir), threshold=0.5, quiet=True)
    assert load_probe(run_dir).head.kind == "mlp" and load_probe(run_dir).threshold == 0.5
    out = tmp_path / "predictions.jsonl"
    assert run_fenlei(["predict", "--probe", str(run_dir), "--input", str(tiny_data / "test.jsonl"), "--output",
                       str(out), "--quiet"]) == 0
    expected = rows_of(run_dir / "test" / "predictions.jsonl")
    _same_predictions(rows_of(out), expected)
    assert all(r["uncertain"] == (r["confidence"] < 0.5) for r in expected)


def test_a_second_probe_moves_the_first_aside(tiny_llama, tiny_data, tmp_path):
    run_dir = tmp_path / "probe"
    options = {"model": str(tiny_llama), "data_dir": str(tiny_data), "cache_dir": str(tmp_path / "c"),
               "run_dir": str(run_dir), "quiet": True}
    probe(**options, layer=0)
    first = (run_dir / "probe.json").read_text()
    probe(**options, layer=-1)
    (archive,) = (run_dir / "previous").iterdir()
    assert (archive / "probe.json").read_text() == first and (archive / "test" / "predictions.jsonl").is_file()
    assert json.loads((run_dir / "probe.json").read_text())["features"]["layer"] == -1


def test_a_training_run_directory_is_refused(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {}\n")
    error = fenlei_user_error(["probe", "--model", "m", "--data_dir", str(tiny_data), "--run_dir", str(run)], capsys)
    assert "holds a training run" in error


def _copy(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy", ignore=shutil.ignore_patterns("predict", "run.lock")))


def _rewrite(folder: Path, name: str, data: bytes) -> None:
    """Change a file and record its new sha256 in the manifest (a consistent but wrong probe)."""
    from fenlei.io import file_sha256

    (folder / name).write_bytes(data)
    manifest = json.loads((folder / "probe.json").read_text())
    manifest["files"][name]["sha256"] = file_sha256(folder / name)
    (folder / "probe.json").write_text(json.dumps(manifest))


def test_loading_checks_the_file_set_in_one_line(saved, tmp_path, capsys):
    copy = _copy(saved, tmp_path)
    predict = ["predict", "--probe", str(copy), "--quiet"]
    (copy / "labels.json").write_text('["billing", "bug", "login", "shipping", "x"]\n')
    assert fenlei_user_error(predict, capsys).endswith("labels.json: its sha256 is not the one probe.json records "
                                                       "(the file was changed or comes from another probe)")
    _rewrite(copy, "labels.json", b'["billing", "bug", "login", "shipping", "x"]\n')
    assert fenlei_user_error(predict, capsys).endswith("labels.json: 5 labels, but the head in probe.json has 4 classes")
    _rewrite(copy, "labels.json", (saved / "labels.json").read_bytes())
    _rewrite(copy, "calibration.json", b'{"temperature": -1, "threshold": 0}')
    assert "calibration.json: temperature must be a finite positive number, got -1" in fenlei_user_error(predict, capsys)
    import io

    buffer = io.BytesIO()
    np.savez(buffer, mean=np.array([object()], dtype=object))
    _rewrite(copy, "head.npz", buffer.getvalue())
    assert "head.npz: not a readable .npz of plain arrays" in fenlei_user_error(predict, capsys)
    (copy / "calibration.json").unlink()
    assert "calibration.json: missing" in fenlei_user_error(predict, capsys)
    (copy / "probe.json").unlink()
    assert "no probe.json: not a probe directory" in fenlei_user_error(predict, capsys)
    assert "no such directory" in fenlei_user_error(["infer", "--probe", str(tmp_path / "none"), "--input",
                                                     str(saved / "labels.json"), "--output", str(tmp_path / "o.jsonl")],
                                                    capsys)


def test_the_model_identity_is_checked(saved, tiny_llama, tmp_path, capsys):
    same = shutil.copytree(tiny_llama, tmp_path / "same_model")  # another path, the same files: accepted
    out = tmp_path / "p.jsonl"
    assert run_fenlei(["predict", "--probe", str(saved), "--model", str(same), "--output", str(out), "--quiet"]) == 0
    other = write_tiny_decoder(tmp_path / "other_model", "llama", seed=1)
    error = fenlei_user_error(["predict", "--probe", str(saved), "--model", str(other), "--quiet"], capsys)
    assert f"model {str(other)!r} here" in error and "is not the model the probe was fitted on" in error


def test_progress_bar_shows_on_a_terminal_only(monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    shown = feat.progress_bar(10, "train")
    assert shown.disable is False and shown.unit == "text"  # tqdm shows the rate as text/s
    shown.close()
    assert feat.progress_bar(10, "train", enabled=False).disable is True  # --quiet
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    bar = feat.progress_bar(10, "train")
    assert bar.disable is True
    bar.update(3)  # the silent stand-in takes the same calls
    bar.close()


def test_predict_and_infer_route_to_the_probe(capsys):
    from fenlei.commands import COMMANDS, routed_module

    assert routed_module(COMMANDS["infer"], ["--probe", "d", "--input", "x"]) == "fenlei.probe.infer"
    assert routed_module(COMMANDS["infer"], ["--probe=d"]) == "fenlei.probe.infer"
    assert routed_module(COMMANDS["infer"], ["--bundle", "b"]) == "fenlei.serving.infer"
    assert routed_module(COMMANDS["predict"], ["--probe", "d"]) == "fenlei.probe.predict"
    assert routed_module(COMMANDS["predict"], ["--config", "c.yaml"]) == ""
    for command in ("infer", "predict"):
        assert run_fenlei([command, "--probe", "d", "--help"]) == 0
        text = capsys.readouterr().out
        assert f"usage: fenlei {command} --probe" in text and "--config CONFIG" in text and "--model" in text


@pytest.mark.parametrize("path", PROBE_CONFIGS, ids=lambda p: p.name)
def test_shipped_probe_configs_run_with_a_tiny_model(path, tiny_llama, tiny_data, tmp_path, capsys):
    """Each configs/probe/*.yaml parses, and runs end to end with the tiny model and data swapped in."""
    config = yaml.safe_load(path.read_text())
    assert run_fenlei(["probe", "--config", str(path), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["layers"] == config["layers"] and printed["model"] == config["model"]
    run_dir = tmp_path / "probe"
    assert run_fenlei(["probe", "--config", str(path), "--model", str(tiny_llama), "--data_dir", str(tiny_data),
                       "--label_field", "label", "--cache_dir", str(tmp_path / "c"), "--run_dir", str(run_dir),
                       "--max_length", "32", "--quiet"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert [r["layer"] for r in report["sweep"]][:: len(config["head"])] == config["layers"]
    assert load_probe(run_dir).features["layer"] in config["layers"]
