"""A crafted pickle checkpoint is refused on every fenlei loading path, even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
(which turns torch's weights_only default back to False wherever a call site leaves the argument unset)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "layout_v0"
CHECKPOINT = "runs/text/checkpoints/best-epoch01.ckpt"


class WritesMarker:
    """Unpickling this runs ``Path(marker).touch()``: what an attacker's checkpoint would do with worse code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.fixture
def crafted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The layout_v0 fixture as the working directory, its text run's best checkpoint a valid Lightning checkpoint
    plus one pickled object that writes a marker file; TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 set."""
    root = shutil.copytree(FIXTURE, tmp_path / "layout_v0")
    monkeypatch.chdir(root)
    marker = tmp_path / "pwned"
    checkpoint = torch.load(root / CHECKPOINT, map_location="cpu", weights_only=True)
    checkpoint["payload"] = WritesMarker(marker)
    torch.save(checkpoint, root / CHECKPOINT)
    # The fixture's run_summary.json names the checkpoint by the absolute path it was written at, which may still
    # exist on the machine that wrote it: point "best" at the crafted copy.
    summary = root / "runs/text/run_summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "best_checkpoint": str(root / CHECKPOINT)}))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    # The crafted file really runs code where weights_only is left to the environment (the attack being defended).
    torch.load(root / CHECKPOINT, map_location="cpu")
    assert marker.exists()
    marker.unlink()
    return root, marker


def test_load_run_refuses_a_pickled_payload(crafted_run: tuple[Path, Path]) -> None:
    from fenlei.training.checkpoints import CheckpointError
    from fenlei.training.run_dir import load_run

    _root, marker = crafted_run
    with pytest.raises(CheckpointError, match=r"best-epoch01\.ckpt: refused to load: it pickles \S+; fenlei reads checkpoints with weights_only=True"):
        load_run("runs/text")
    assert not marker.exists()


def test_export_refuses_a_pickled_payload(crafted_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from fenlei.commands import main

    root, marker = crafted_run
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--quiet", "--ckpt_path", "runs/text", "--out", "bundle_new"])
    assert exit_info.value.code == 2 and not marker.exists() and not (root / "bundle_new").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fenlei: error: ") and "weights_only=True" in err[-1]


def test_test_ckpt_path_refuses_a_pickled_payload(crafted_run: tuple[Path, Path]) -> None:
    from fenlei.errors import find_user_error
    from fenlei.training.checkpoints import CheckpointError
    from fenlei.training.cli import run_lightning_cli

    _root, marker = crafted_run
    with pytest.raises(BaseException) as raised:  # noqa: PT011 - Lightning may wrap it; the user error is inside
        run_lightning_cli(args=["test", "--config", "runs/text/config.yaml", "--ckpt_path", "best",
                                "--wandb.mode=disabled"])
    assert isinstance(find_user_error(raised.value), CheckpointError)
    assert not marker.exists()


def test_weights_only_false_is_refused(crafted_run: tuple[Path, Path]) -> None:
    from fenlei.errors import OptionError, find_user_error
    from fenlei.training.cli import run_lightning_cli

    _root, marker = crafted_run
    with pytest.raises(BaseException) as raised:  # noqa: PT011
        run_lightning_cli(args=["test", "--config", "runs/text/config.yaml", "--ckpt_path", "best",
                                "--weights_only", "false", "--wandb.mode=disabled"])
    assert isinstance(find_user_error(raised.value), OptionError)
    assert not marker.exists()


def test_generative_best_adapter_state_loads_weights_only(crafted_run: tuple[Path, Path]) -> None:
    """The direct torch.load (the adapter weights of the best checkpoint at fit end) passes weights_only=True."""
    from lightning_modules.generative_classifier import GenerativeClassifier

    root, marker = crafted_run
    fake = SimpleNamespace(trainer=SimpleNamespace(checkpoint_callback=SimpleNamespace(
        best_model_path=str(root / CHECKPOINT))))
    with pytest.raises(Exception, match="Weights only load failed"):  # noqa: PT011 - torch's UnpicklingError
        GenerativeClassifier._best_adapter_state(fake)  # type: ignore[arg-type]
    assert not marker.exists()
