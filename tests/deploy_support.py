"""Shared, cached artefacts for the deploy tests: one tiny trained run and one exported bundle per session.

Module-level caches (not conftest fixtures) so several test modules reuse the same ~20 s fit and ~5 s export.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO_ROOT, tiny_overrides

if TYPE_CHECKING:
    from fenlei.deploy.export import ExportOptions

_CACHE: dict[str, Path] = {}


def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_data: Path) -> Path:
    """A tiny EncoderClassifier fitted for 4 epochs (it learns the four classes: ~0.9 validation accuracy)."""
    if "run" not in _CACHE:
        from fenlei.training.cli import run_lightning_cli

        run_dir = tmp_path_factory.mktemp("deploy_run") / "run"
        run_lightning_cli(args=["fit", "--config", str(REPO_ROOT / "configs" / "quickstart.yaml"),
                                *tiny_overrides(tiny_model, tiny_data, run_dir), "--trainer.max_epochs=4",
                                "--trainer.precision=32-true", "--model.init_args.lr=3e-3",
                                "--model.init_args.head_lr=1e-2"])
        _CACHE["run"] = run_dir
    return _CACHE["run"]


def export_args(*argv: str) -> ExportOptions:
    """The options of ``fenlei export --quiet ARGV``, parsed by the command's own parser."""
    from dataclasses import replace

    from fenlei.deploy.export import parse_options

    return replace(parse_options(["--quiet", *argv]), argv=tuple(argv))


def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_data: Path) -> Path:
    """The default export (dynamic INT8, global threshold) of :func:`tiny_run`. Treat as read-only."""
    if "bundle" not in _CACHE:
        from fenlei.deploy.export import export

        run_dir = tiny_run(tmp_path_factory, tiny_model, tiny_data)
        out = tmp_path_factory.mktemp("deploy_bundle") / "bundle"
        export(export_args("--ckpt_path", str(run_dir), "--out", str(out)))
        _CACHE["bundle"] = out
    return _CACHE["bundle"]


def copy_bundle(bundle: Path, target: Path) -> Path:
    shutil.copytree(bundle, target)
    return target
