"""benchmarks/decoder_classifiers.py resumes a killed run: a fine-tuning route continues from its last epoch
checkpoint to the weights of the uninterrupted run, and a rerun of the same settings keeps the routes it finished."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from benchmarks import decoder_classifiers as bench
from fenlei.training.callbacks import EpochClock
from tests.conftest import CLASS_WORDS, FILLER, REPO_ROOT, write_jsonl
from tests.decoder_support import write_tiny_decoder


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    labels = list(CLASS_WORDS)
    return [{"text": " ".join([rng.choice(CLASS_WORDS[labels[i % len(labels)]])] + rng.choices(FILLER, k=rng.randint(1, 8))),
             "label": labels[i % len(labels)]} for i in range(n)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("decoder_resume")
    write_jsonl(root / "data" / "train.jsonl", _rows(32, 1))
    write_jsonl(root / "data" / "test.jsonl", _rows(8, 2))
    return write_tiny_decoder(root / "decoder"), root / "data"


def _args(epochs: int) -> argparse.Namespace:
    return argparse.Namespace(epochs=epochs, max_steps=0, max_length=16, batch_size=8, eval_batch_size=8, lr=3e-3)


def _checkpoint_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_a_killed_seqcls_route_resumes_to_the_uninterrupted_weights(setup: tuple[Path, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = setup
    pl.seed_everything(0)
    whole = bench.run_seqcls(str(model), data, tmp_path / "whole", _args(3))

    # The same run, killed as its second epoch starts (after the first epoch's checkpoint was written).
    original = EpochClock.on_train_epoch_start

    def dies_in_epoch_two(self: EpochClock, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("killed")
        original(self, trainer, pl_module)

    pl.seed_everything(0)
    with monkeypatch.context() as patch:
        patch.setattr(EpochClock, "on_train_epoch_start", dies_in_epoch_two)
        with pytest.raises(RuntimeError, match="killed"):
            bench.run_seqcls(str(model), data, tmp_path / "cut", _args(3))
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0

    pl.seed_everything(123)  # the resume restores the RNG states of the checkpoint, whatever the caller seeded
    resumed = bench.run_seqcls(str(model), data, tmp_path / "cut", _args(3), resume=True)
    a, b = _checkpoint_weights(tmp_path / "whole"), _checkpoint_weights(tmp_path / "cut")
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    assert resumed["accuracy"] == whole["accuracy"]
    assert resumed["train_seconds"] > 0

    # Not resuming: an earlier run's checkpoint is removed, not continued (a fresh run of 1 epoch ends at epoch 0).
    bench.run_seqcls(str(model), data, tmp_path / "cut", _args(1))
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


def test_epoch_clock_counts_finished_epochs_and_carries_them_in_its_state() -> None:
    clock = EpochClock()
    clock.load_state_dict({"finished_seconds": 5.0})
    clock.on_train_epoch_start(None, None)  # type: ignore[arg-type]
    clock.on_train_epoch_end(None, None)  # type: ignore[arg-type]
    assert clock.seconds > 5.0
    clock.on_train_epoch_start(None, None)  # type: ignore[arg-type]  # an epoch cut short: never counted
    assert EpochClock().state_dict() == {"finished_seconds": 0.0}
    assert clock.state_dict()["finished_seconds"] == clock.seconds


def _smoke_probe(out: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "benchmarks/decoder_classifiers.py", "--smoke", "--parts", "probe", "--train_size", "24",
           "--test_size", "8", "--out", str(out), "--work_dir", str(work), *extra]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not (REPO_ROOT.parent / "shared" / "data" / "endava_tickets_partial").is_dir(),
                    reason="needs ../shared/data")
def test_a_rerun_of_an_interrupted_run_keeps_its_finished_routes(tmp_path: Path) -> None:
    out, work = tmp_path / "endava.json", tmp_path / "work"
    out.write_text('{"complete": false, ')  # not a results file: said so, then overwritten
    first = _smoke_probe(out, work)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"{out}: not JSON" in first.stdout
    finished = json.loads(out.read_text())
    assert finished["complete"] is True and "linear_probe" in finished

    # Interrupted (complete false), same settings and CPU: the finished probe is kept, the run completes (which
    # files are resumed at all: test_only_an_interrupted_run_of_the_same_settings_on_the_same_cpu_is_resumed).
    marker = {**finished, "linear_probe": {"marker": True}}
    out.write_text(json.dumps({**marker, "complete": False}))
    resumed = _smoke_probe(out, work)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "finished: linear_probe" in resumed.stdout
    kept = json.loads(out.read_text())
    assert kept["linear_probe"] == {"marker": True} and kept["complete"] is True


def test_only_an_interrupted_run_of_the_same_settings_on_the_same_cpu_is_resumed() -> None:
    cpu = {"model": "AMD EPYC", "cores": 2, "flags": ["avx2"]}
    settings = {"seed": 42, "parts": ["probe", "seqcls"]}
    cut = {"complete": False, "settings": settings, "machine": {"cpu": cpu}, "linear_probe": {}}
    assert bench.resume_decision(cut, settings, cpu, restart=False) == (
        True, "resuming the interrupted run (finished: linear_probe)")
    assert bench.resume_decision(cut, settings, cpu, restart=True)[0] is False
    assert bench.resume_decision({**cut, "complete": True}, settings, cpu, restart=False) == (False, "")
    assert bench.resume_decision({k: v for k, v in cut.items() if k != "complete"}, settings, cpu, False) == (False, "")
    assert bench.resume_decision({}, settings, cpu, restart=False) == (False, "")
    other = bench.resume_decision(cut, {**settings, "seed": 7}, cpu, restart=False)
    assert other[0] is False and "other settings" in other[1]
    moved = bench.resume_decision(cut, settings, {**cpu, "flags": ["avx2", "avx512_vnni"]}, restart=False)
    assert moved[0] is False and "another CPU" in moved[1]
