"""Artefacts written before the one-namespace move (tests/fixtures/layout_v0) still load and run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_old_run_directories_test_again(old_layout: Path) -> None:
    from fenlei.training.cli import run_lightning_cli

    before = json.loads((old_layout / "runs/text/test/metrics.json").read_text())
    run_lightning_cli(args=["test", "--config", "runs/text/config.yaml", "--ckpt_path", "best", "--wandb.mode=disabled"])
    after = json.loads((old_layout / "runs/text/test/metrics.json").read_text())
    assert after == pytest.approx(before)  # the same checkpoint on the same data gives the same figures
    run_lightning_cli(args=["test", "--config", "runs/numeric/config.yaml", "--ckpt_path", "best",
                            "--wandb.mode=disabled"])
    assert (old_layout / "runs/numeric/test/metrics.json").is_file()


def test_old_bundle_serves_and_old_run_exports(old_layout: Path) -> None:
    from fenlei.serving.predictor import BundlePredictor

    old = BundlePredictor(old_layout / "bundle")
    texts = ["my refund payment card", "password login locked", "courier package late", "screen crash error"]
    predictions = old.predict(texts)
    assert [p["predicted_label"] for p in predictions] and len(predictions) == 4

    from fenlei.commands import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--quiet", "--ckpt_path", "runs/text", "--out", "bundle_new"])
    assert exit_info.value.code == 0
    new = BundlePredictor(old_layout / "bundle_new")
    assert [p["predicted_label"] for p in new.predict(texts)] == [p["predicted_label"] for p in predictions]


@pytest.mark.parametrize(("run", "model_class", "data_class"), [
    ("runs/text", "EncoderClassifier", "TextClassificationDataModule"),
    ("runs/numeric", "BinClassifier", "NumericTargetDataModule"),
])
def test_old_runs_load_for_inference_by_their_class_paths(old_layout: Path, run: str, model_class: str,
                                                          data_class: str) -> None:
    """fenlei.training.run_dir.load_run rebuilds the model and the DataModule that config.yaml names and
    predicts what ``fenlei predict`` writes (the module's own predict_step)."""
    import numpy as np
    import torch

    from fenlei.training.run_dir import load_run

    loaded = load_run(run)
    assert type(loaded.model).__name__ == model_class and type(loaded.datamodule).__name__ == data_class
    assert loaded.checkpoint.name.startswith("best-epoch") and loaded.run_dir == Path(run)
    assert loaded.label_names == json.loads((old_layout / run / "labels.json").read_text())
    assert loaded.text_fields == ["text"] and loaded.datamodule.max_length == 32
    rows = [json.loads(line) for line in (old_layout / "data/test.jsonl").read_text().splitlines()][:6]
    texts = [loaded.text_of(row) for row in rows]
    probs = loaded.predict_proba(texts, batch_size=4)
    assert probs.shape == (6, len(loaded.label_names)) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    # The same numbers as the module's forward pass on one text at a time (padding does not change them).
    ids = loaded.encode(texts[:1])
    with torch.no_grad():
        batch = {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(1, len(ids[0]), dtype=torch.long),
                 "index": torch.tensor([0])}
        single = loaded.model.predict_step(batch, 0)["probs"].numpy()
    np.testing.assert_allclose(probs[:1], single, atol=1e-5)
