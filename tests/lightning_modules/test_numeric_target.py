"""Numeric targets: the DataModule (bins fitted on train only, saved, checked on load), feature markers, the
regression / bin-index / ordinal modules and their metrics, and a fast_dev_run of every gsm8k config."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.markers import FeatureMarkers, length_units, text_feature
from datamodules.numeric_target import NumericTargetDataModule
from datamodules.readers import DataError
from fenlei.metrics import numeric_target_report
from fenlei.training.cli import run_lightning_cli
from lightning_modules import BinClassifier, EncoderRegressor, OrdinalRegressor
from tests.conftest import FILLER, REPO_ROOT, write_jsonl

WORDS = [w for w in FILLER if w not in ("i",)] + ["refund", "password", "crash", "delivery"]


def numeric_rows(n: int, seed: int) -> list[dict]:
    """Target grows with the number of words (learnable), plus noise; some texts ask questions."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.randint(2, 12)
        text = " ".join(rng.choice(WORDS) for _ in range(k)) + ("?" if i % 3 == 0 else "")
        rows.append({"text": text, "label": k * 5 + rng.randint(0, 4), "id": i})
    return rows


@pytest.fixture(scope="module")
def numeric_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("numeric")
    write_jsonl(root / "train.jsonl", numeric_rows(80, 1))
    write_jsonl(root / "test.jsonl", numeric_rows(24, 2))
    return root


def datamodule(tiny_model: Path, data_dir: Path, **kwargs) -> NumericTargetDataModule:
    return NumericTargetDataModule(tokenizer=str(tiny_model), data_dir=str(data_dir), max_length=32, batch_size=8, **kwargs)


# ---- DataModule ----


def test_bins_known_before_setup_fitted_on_train_split_only(tiny_model: Path, numeric_data: Path, tmp_path: Path) -> None:
    dm = datamodule(tiny_model, numeric_data, binning={"scheme": "quantile", "num_bins": 4})
    assert dm.num_classes == 4 and len(dm.label_names) == 4  # no setup() needed: link_arguments reads these
    train = dm.train_targets
    assert len(train) == 72  # 10% of 80 held out for validation (no validation file)
    edges = dm.binner.bin_edges
    assert np.allclose(edges[1:-1], np.quantile(train, [0.25, 0.5, 0.75]))
    assert sum(dm.class_counts) == 72

    # The test file does not move the edges: same train file, wildly different test file.
    other = tmp_path / "other"
    write_jsonl(other / "train.jsonl", numeric_rows(80, 1))
    write_jsonl(other / "test.jsonl", [{"text": "the the the", "label": 10_000}] * 30)
    dm2 = datamodule(tiny_model, other, binning={"scheme": "quantile", "num_bins": 4})
    assert np.array_equal(dm2.binner.bin_edges, edges)
    dm2.setup("test")
    assert set(dm2.datasets["test"].labels) == {3}  # clipped into the top bin, not refitted
    assert dm2.datasets["test"].targets[0] == 10_000.0


def test_batches_carry_bins_and_raw_targets(tiny_model: Path, numeric_data: Path) -> None:
    dm = datamodule(tiny_model, numeric_data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["targets"].dtype == torch.float32 and batch["labels"].dtype == torch.long
    expected = dm.binner.transform(batch["targets"].numpy())
    assert batch["labels"].tolist() == expected.tolist()


def test_binning_saved_and_checked_against_checkpoint_state(tiny_model: Path, numeric_data: Path, tmp_path: Path) -> None:
    dm = datamodule(tiny_model, numeric_data, binning={"scheme": "equal_width", "num_bins": 3})
    from fenlei.training.run_dir import RunDir

    RunDir(tmp_path).write_run_files(dm.run_files())
    saved = json.loads((tmp_path / "binning.json").read_text())
    assert saved["binner"]["scheme"] == "equal_width" and saved["label_names"] == dm.label_names
    assert sum(saved["train_report"]["bin_sizes"]) == 72
    assert 0.0 <= saved["train_report"]["balance"] <= 1.0

    state = dm.state_dict()
    dm.load_state_dict(state)  # same bins: fine
    other = datamodule(tiny_model, numeric_data, binning={"scheme": "equal_width", "num_bins": 4})
    with pytest.raises(DataError, match="other bins"):
        other.load_state_dict(state)
    # binning_file reuses the saved bins instead of fitting (transfer to other data).
    reused = datamodule(tiny_model, numeric_data, binning={"scheme": "quantile", "num_bins": 5},
                        binning_file=str(tmp_path / "binning.json"))
    assert np.array_equal(reused.binner.bin_edges, dm.binner.bin_edges)


def test_outlier_filter_touches_train_only(tiny_model: Path, numeric_data: Path) -> None:
    dm = datamodule(tiny_model, numeric_data, outlier_filter={"upper": 40})
    assert dm.train_targets.max() <= 40 and dm.outliers_removed > 0
    dm.setup("test")
    assert max(dm.datasets["test"].targets) > 40  # test rows are never dropped


def test_kmeans_on_target_and_text_features(tiny_model: Path, numeric_data: Path) -> None:
    dm = datamodule(tiny_model, numeric_data,
                    binning={"scheme": "kmeans", "k": 3, "features": ["words", "question_marks", "kw:[HOW]"]})
    assert dm.num_classes == 3
    train = dm._splits["train"]
    bins = dm.bins(train, None)
    means = [dm.train_targets[bins == b].mean() for b in range(3)]
    assert means == sorted(means)  # bin ids ordered by the mean target
    assert dm.decode_boundaries is None
    with pytest.raises(DataError, match="unknown text feature"):
        _ = datamodule(tiny_model, numeric_data, binning={"scheme": "kmeans", "k": 3, "features": ["nope"]}).num_classes


def test_non_numeric_target_names_the_line(tiny_model: Path, tmp_path: Path) -> None:
    rows = numeric_rows(20, 3)
    rows[6]["label"] = "long"
    write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"train\.jsonl:7: field 'label' must be a number"):
        _ = datamodule(tiny_model, tmp_path).num_classes


def test_bad_binning_spec_is_a_clear_error(tiny_model: Path, numeric_data: Path) -> None:
    with pytest.raises(DataError, match="unknown binning scheme"):
        datamodule(tiny_model, numeric_data, binning={"scheme": "deciles"})


# ---- feature markers ----


def test_markers_english_and_chinese() -> None:
    markers = FeatureMarkers()
    assert markers.markers("Why is the sky blue?") == ["[SHORT]", "[WHY]"]
    assert markers("Why is the sky blue?") == "[SHORT] [WHY] Why is the sky blue?"
    assert markers.markers("Please show me the list") == ["[SHORT]", "[LIST]"]  # "show" is not "how"
    assert set(markers.markers("如何计算总共多少钱？为什么？")) == {"[SHORT]", "[CALCULATE]", "[WHY]", "[HOW]", "[MULTI_Q]"}
    long_text = " ".join(["word"] * 70)
    assert markers.markers(long_text) == ["[LONG]"]
    assert length_units("我们 go") == 3
    custom = FeatureMarkers(rules={"[CODE]": ["python"]}, length_thresholds=None, multi_question=False)
    assert custom.tokens == ["[CODE]"] and custom("write python") == "[CODE] write python"
    assert text_feature("kw:[CODE]", "Python rocks", custom) == 1.0
    with pytest.raises(ValueError, match="must look like"):
        FeatureMarkers(rules={"CODE": ["x"]})


def test_markers_become_special_tokens_and_resize_embeddings(tiny_model: Path, numeric_data: Path) -> None:
    dm = datamodule(tiny_model, numeric_data, markers={})
    base = NumericTargetDataModule(tokenizer=str(tiny_model), data_dir=str(numeric_data)).tokenizer
    assert dm.vocab_size == len(base) + len(dm.markers.tokens)
    ids = dm.tokenizer(dm.model_text("how many refund ?"))["input_ids"]
    marker_ids = set(dm.tokenizer.convert_tokens_to_ids(dm.markers.tokens))
    assert len(marker_ids & set(ids)) == 3  # [SHORT] [CALCULATE] [HOW], each one token
    model = BinClassifier(str(tiny_model), num_classes=4, vocab_size=dm.vocab_size)
    assert model.backbone.get_input_embeddings().num_embeddings == dm.vocab_size


# ---- modules: losses and decoding on hand-made outputs ----


def _with_bins(model, medians, boundaries=None):
    model.bin_medians.copy_(torch.tensor(medians, dtype=torch.float64))
    if boundaries is not None:
        model.bin_boundaries.copy_(torch.tensor(boundaries, dtype=torch.float64))
    return model


def test_bin_index_regressor_rounds_and_clips(tiny_model: Path) -> None:
    model = _with_bins(EncoderRegressor(str(tiny_model), num_classes=4, target="bin_index"), [10, 20, 30, 40])
    bins, values = model.decode(torch.tensor([[-0.7], [0.5], [1.49], [2.5], [9.0]]))
    assert bins.tolist() == [0, 1, 1, 3, 3]
    assert values.tolist() == [10, 20, 20, 40, 40]
    loss = model.compute_loss(torch.tensor([[1.0], [3.0]]), {"labels": torch.tensor([1, 1]), "targets": torch.zeros(2)})
    assert loss.item() == pytest.approx(2.0)  # MSE on the index: (0 + 4) / 2


def test_value_regressor_log_target_roundtrip(tiny_model: Path) -> None:
    model = _with_bins(EncoderRegressor(str(tiny_model), num_classes=3, log_target=True, loss="huber"),
                       [5, 50, 500], [20, 200])
    model.target_mean.fill_(2.0)
    model.target_std.fill_(0.5)
    z = (torch.log1p(torch.tensor([10.0, 100.0, 1000.0], dtype=torch.float64)) - 2.0) / 0.5
    bins, values = model.decode(z[:, None])
    assert torch.allclose(values, torch.tensor([10.0, 100.0, 1000.0], dtype=torch.float64))
    assert bins.tolist() == [0, 1, 2]
    loss = model.compute_loss(z[:, None].float(), {"targets": torch.tensor([10.0, 100.0, 1000.0]), "labels": bins})
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("method", ["coral", "corn"])
def test_ordinal_heads_decode_and_learn(tiny_model: Path, method: str) -> None:
    model = _with_bins(OrdinalRegressor(str(tiny_model), num_classes=4, method=method), [1, 2, 3, 4])
    big = 20.0
    outputs = torch.tensor([[-big, -big, -big], [big, -big, -big], [big, big, big], [big, big, -big]])
    bins, values = model.decode(outputs)
    assert bins.tolist() == [0, 1, 3, 2]
    probs = model.bin_probs(outputs)
    assert torch.allclose(probs.sum(-1), torch.ones(4)) and probs.argmax(-1).tolist() == [0, 1, 3, 2]
    labels = torch.tensor([0, 1, 3, 2])
    good = model.compute_loss(outputs, {"labels": labels})
    bad = model.compute_loss(-outputs, {"labels": labels})
    assert good.item() < 1e-6 < bad.item()


def test_corn_ignores_tasks_beyond_the_label(tiny_model: Path) -> None:
    model = OrdinalRegressor(str(tiny_model), num_classes=4, method="corn")
    # Label 0: only task 0 (y > 0 ?) is eligible; the logits of tasks 1 and 2 must not matter.
    a = model.compute_loss(torch.tensor([[-3.0, 5.0, 5.0]]), {"labels": torch.tensor([0])})
    b = model.compute_loss(torch.tensor([[-3.0, -5.0, 0.0]]), {"labels": torch.tensor([0])})
    assert a.item() == pytest.approx(b.item())


def test_numeric_report_known_values() -> None:
    report = numeric_target_report(
        true_bins=[0, 1, 2, 2], predicted_bins=[0, 1, 1, 2], true_targets=[10, 20, 30, 40],
        predicted_values=[10, 20, 20, 40], num_bins=3, train_median=25,
    )
    assert report["acc"] == 0.75 and report["mae_bins"] == 0.25
    assert report["target_mae"] == pytest.approx(2.5) and report["constant_mae"] == pytest.approx(10.0)
    assert report["min_bin_f1"] == pytest.approx(2 / 3)
    assert 0 < report["qwk"] <= 1 and report["target_spearman"] > 0.9


# ---- every gsm8k config runs (tiny model, fast_dev_run), and a full tiny fit + test writes the metrics ----

GSM8K_CONFIGS = sorted((REPO_ROOT / "configs" / "gsm8k").glob("*.yaml"))


def numeric_overrides(tiny_model: Path, data: Path, run_dir: Path) -> list[str]:
    return [
        f"--model.init_args.pretrained={tiny_model}",
        f"--data.init_args.tokenizer={tiny_model}",
        f"--data.init_args.data_dir={data}",
        "--data.init_args.max_length=32",
        "--data.init_args.batch_size=8",
        f"--trainer.default_root_dir={run_dir}",
        "--trainer.accelerator=cpu",
        "--trainer.precision=32-true",
        "--wandb.mode=disabled",
    ]


def test_at_least_ten_gsm8k_configs() -> None:
    assert len(GSM8K_CONFIGS) >= 10


@pytest.mark.parametrize("config", GSM8K_CONFIGS, ids=lambda p: p.stem)
def test_gsm8k_config_fast_dev_run(config: Path, tiny_model: Path, numeric_data: Path, tmp_path: Path) -> None:
    extra = ["--model.init_args.freeze_layers=1"] if "freeze_layers" in config.read_text() else []  # tiny: 2 layers
    run_lightning_cli(args=["fit", "--config", str(config), "--config", str(REPO_ROOT / "configs/debug/fast_dev_run.yaml"),
                            *numeric_overrides(tiny_model, numeric_data, tmp_path / "run"), *extra])


def test_regressor_fit_and_test_report_target_units(tiny_model: Path, numeric_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = str(REPO_ROOT / "configs" / "gsm8k" / "regression_mse.yaml")
    args = [*numeric_overrides(tiny_model, numeric_data, run_dir), "--trainer.max_epochs=2"]
    run_lightning_cli(args=["fit", "--config", config, *args])
    assert (run_dir / "binning.json").is_file()
    run_lightning_cli(args=["test", "--config", config, *args, "--ckpt_path=best"])
    metrics = json.loads((run_dir / "test" / "metrics.json").read_text())
    for key in ("test/acc", "test/f1_macro", "test/min_bin_f1", "test/mae_bins", "test/qwk", "test/target_mae",
                "test/constant_mae", "test/target_r2", "test/target_spearman"):
        assert key in metrics, key
    targets = np.array([r["label"] for r in numeric_rows(24, 2)], dtype=float)
    train = NumericTargetDataModule(tokenizer=str(tiny_model), data_dir=str(numeric_data)).train_targets
    assert metrics["test/constant_mae"] == pytest.approx(np.abs(targets - np.median(train)).mean())

    # predict: one row per input row, with the regressed number next to its bin.
    run_lightning_cli(args=["predict", "--config", config, *args, "--ckpt_path=best"])
    rows = [json.loads(line) for line in (run_dir / "predict" / "predictions.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rows] == list(range(24))
    assert all(isinstance(r["value"], float) and r["label"].split(":")[0].isdigit() for r in rows)


def test_bad_marker_rules_are_a_data_error(tiny_model: Path, numeric_data: Path) -> None:
    with pytest.raises(DataError, match=r"markers: marker 'CODE' must look like \[NAME\]"):
        datamodule(tiny_model, numeric_data, markers={"rules": {"CODE": ["python"]}})
