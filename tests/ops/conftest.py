"""Fixtures of the ops tests: a tiny run after fit, test and validate (the report's input)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fenlei.commands import main
from fenlei.training.cli import run_lightning_cli
from tests.conftest import REPO_ROOT, tiny_overrides

QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")


@pytest.fixture(scope="package")
def tested_run(tiny_model: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run after fit, test and validate (the validate command exactly as the report advises it)."""
    run_dir = tmp_path_factory.mktemp("report_run") / "run"
    overrides = tiny_overrides(tiny_model, tiny_data, run_dir)
    run_lightning_cli(args=["fit", "--config", QUICKSTART, *overrides, "--trainer.max_epochs=2",
                            "--trainer.precision=32-true", "--model.init_args.lr=3e-3",
                            "--model.init_args.head_lr=1e-2", "--trainer.num_sanity_val_steps=0"])
    run_lightning_cli(args=["test", "--config", QUICKSTART, *overrides, "--ckpt_path=best",
                            "--trainer.precision=32-true"])
    run_lightning_cli(args=["validate", "--config", str(run_dir / "config.yaml"), "--ckpt_path", "best"])
    return run_dir


def copy_run(run_dir: Path, to: Path) -> Path:
    return Path(shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("wandb", "checkpoints", "report.html")))


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def main_status(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0)
