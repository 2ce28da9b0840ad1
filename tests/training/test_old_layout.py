"""Artefacts written before the one-namespace move (tests/fixtures/layout_v0) still load and run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "layout_v0"


@pytest.fixture
def old_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fixture as the working directory (its run files name the model and data relatively)."""
    root = shutil.copytree(FIXTURE, tmp_path / "layout_v0")
    monkeypatch.chdir(root)
    return root


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
