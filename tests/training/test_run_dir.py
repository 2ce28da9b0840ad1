"""fenlei.training.run_dir with plain files: names, checkpoints, summary, archive, checkpoint resolution."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fenlei.training import run_dir as rd
from fenlei.training.run_dir import RunDir, RunError


def _touch(path: Path, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_paths_follow_the_documented_layout(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.config == tmp_path / "config.yaml" and run.labels == tmp_path / "labels.json"
    assert run.last_checkpoint == tmp_path / "checkpoints" / "last.ckpt"
    assert run.summary == tmp_path / "run_summary.json" and run.metrics_csv == tmp_path / "metrics.csv"
    assert run.test_metrics == tmp_path / "test" / "metrics.json"
    assert run.predictions == tmp_path / "predict" / "predictions.jsonl"
    assert run.binning == tmp_path / "binning.json" and run.previous == tmp_path / "previous"
    # Every file name in the table of the module docstring.
    for name in (rd.CONFIG_FILE, rd.LABELS_FILE, rd.BINNING_FILE, rd.LAST_CHECKPOINT_FILE, rd.METRICS_FILE,
                 rd.HPARAMS_FILE, rd.SUMMARY_FILE, rd.PER_CLASS_CSV, rd.PER_CLASS_MD, rd.CONFUSION_MATRIX_PNG,
                 rd.PREDICTIONS_FILE, rd.DECODING_METRICS_FILE):
        assert name in rd.__doc__, name


def test_default_run_dir() -> None:
    assert rd.default_run_dir(["configs/quickstart.yaml"]) == Path("runs/quickstart")
    assert rd.default_run_dir(None) == Path("runs/default")


def test_summary_round_trip_and_finished(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.read_summary() is None and not run.is_finished()
    run.write_summary({"finished": True, "best_checkpoint": None})
    assert run.read_summary() == {"finished": True, "best_checkpoint": None} and run.is_finished()
    assert not run.is_finished(with_test=True)
    _touch(run.test_metrics)
    assert run.is_finished(with_test=True)
    run.clear_summary()
    assert not run.is_finished()


def test_best_checkpoint_from_summary_then_newest_file(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    with pytest.raises(RunError, match="no finished fit with a best checkpoint"):
        run.best_checkpoint()
    old = _touch(run.checkpoints / "best-epoch00.ckpt", mtime=1_000)
    new = _touch(run.checkpoints / "best-epoch03.ckpt", mtime=2_000)
    _touch(run.last_checkpoint, mtime=3_000)  # never the best
    assert run.best_checkpoint() == new
    run.write_summary({"best_checkpoint": str(old)})
    assert run.best_checkpoint() == old
    # A summary naming a file that moved (a copied run directory): the newest best file.
    run.write_summary({"best_checkpoint": "/nowhere/best-epoch09.ckpt"})
    assert run.best_checkpoint() == new
    # A copy of a run whose original still exists: the copy's own file of that name, never the original's.
    copy = RunDir(tmp_path / "copy")
    mine = _touch(copy.checkpoints / "best-epoch00.ckpt", mtime=1_000)
    _touch(copy.checkpoints / "best-epoch03.ckpt", mtime=2_000)
    copy.write_summary({"best_checkpoint": str(old)})
    assert old.is_file() and copy.best_checkpoint() == mine


def test_archive_moves_one_fits_files_only(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for name in ("metrics.csv", "run_summary.json", "labels.json", "checkpoints/last.ckpt", "test/metrics.json",
                 "config.yaml", "wandb/x"):
        _touch(tmp_path / name)
    archive = run.archive_previous()
    assert archive is not None and archive.parent == run.previous
    assert sorted(p.name for p in archive.iterdir()) == ["checkpoints", "labels.json", "metrics.csv",
                                                        "run_summary.json", "test"]
    assert run.config.is_file() and (tmp_path / "wandb" / "x").is_file()  # rewritten / kept in place
    assert run.archive_previous() is None


def test_resolve_checkpoint(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    best = _touch(run.checkpoints / "best-epoch01.ckpt")
    assert rd.resolve_checkpoint(str(run.path)) == (best, run.path)
    assert rd.resolve_checkpoint("best", run.path) == (best, run.path)
    assert rd.resolve_checkpoint(str(best)) == (best, None)  # no config.yaml: not known as a run directory
    _touch(run.config)
    assert rd.resolve_checkpoint(str(best)) == (best, run.path)
    with pytest.raises(RunError, match="needs --run_dir"):
        rd.resolve_checkpoint("best")
    with pytest.raises(RunError, match="no such checkpoint file or run directory"):
        rd.resolve_checkpoint(str(tmp_path / "nope.ckpt"))


def test_load_run_names_what_is_missing(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    _touch(run.checkpoints / "best-epoch00.ckpt")
    with pytest.raises(RunError, match="cannot find the run's config.yaml"):
        rd.load_run(tmp_path)
    run.config.write_text(json.dumps({"model": {"class_path": "lightning_modules.EncoderClassifier"}}))
    with pytest.raises(RunError, match="no data.class_path"):
        rd.load_run(tmp_path)


def test_instantiate_builds_nested_class_paths() -> None:
    built = rd.instantiate({"a": [{"class_path": "fractions.Fraction", "init_args": {"numerator": 1, "denominator": 4}}],
                            "b": 2})
    from fractions import Fraction

    assert built == {"a": [Fraction(1, 4)], "b": 2}
    with pytest.raises(RunError, match="cannot import"):
        rd.import_class("no_such_module.Thing")
