"""Every shipped YAML parses, and every experiment config runs a fast_dev_run with the tiny model swapped in."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fenlei.training.cli import run_lightning_cli
from tests.conftest import REPO_ROOT, tiny_overrides

CONFIG_DIR = REPO_ROOT / "configs"
ALL_YAML = sorted(CONFIG_DIR.rglob("*.yaml"))
PRESET_DIRS = {"debug", "trainer", "logger"}
# Sweep files and ablation specs are not LightningCLI configs: tests/ops/ validates them.
OPS_DIRS = {"sweeps", "ablations"}
EXPERIMENTS = [p for p in ALL_YAML if p.parent.name not in PRESET_DIRS | OPS_DIRS]
PRESETS = [p for p in ALL_YAML if p.parent.name in PRESET_DIRS]
# Numeric-target configs need numeric data: tests/test_numeric_target.py runs each of them on its own tiny data.
# Decoder configs need a tiny decoder: tests/training/test_decoder_configs.py runs each of them.
CLASSIFICATION_EXPERIMENTS = [p for p in EXPERIMENTS if p.parent.name not in ("gsm8k", "decoder")]
GPU_PRESETS = {"ddp_gpu.yaml", "fsdp.yaml"}


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIG_DIR))


def test_configs_exist() -> None:
    names = {_id(p) for p in ALL_YAML}
    for required in ["quickstart.yaml", "focal_lert.yaml", "roberta_wwm_ext.yaml", "macbert.yaml", "rbt3.yaml",
                     "deberta.yaml", "bench/banking77_minilm.yaml", "bench/banking77_mpnet.yaml",
                     "debug/fast_dev_run.yaml", "debug/overfit_batches.yaml", "debug/limit_batches.yaml",
                     "trainer/ddp_cpu.yaml", "trainer/ddp_gpu.yaml", "trainer/fsdp.yaml"]:
        assert required in names, required


@pytest.mark.parametrize("path", ALL_YAML, ids=_id)
def test_yaml_is_valid(path: Path) -> None:
    assert isinstance(yaml.safe_load(path.read_text()), dict)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_id)
def test_print_config(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_lightning_cli(args=["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("lightning_modules.")
    assert printed["data"]["class_path"].startswith("datamodules.")


@pytest.mark.parametrize("path", CLASSIFICATION_EXPERIMENTS, ids=_id)
def test_fast_dev_run_with_tiny_model(path: Path, tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    args = ["fit", "--config", str(path), "--config", str(CONFIG_DIR / "debug/fast_dev_run.yaml")]
    cli = run_lightning_cli(args=args + tiny_overrides(tiny_model, tiny_data, tmp_path / "run"))
    assert cli.trainer.state.finished
    assert cli.model.hparams.num_classes == 4
    assert cli.model.hparams.label_names == ["billing", "bug", "login", "shipping"]


@pytest.mark.parametrize("path", [p for p in PRESETS if p.name not in GPU_PRESETS and p.parent.name != "logger"],
                         ids=_id)
def test_presets_stack_on_quickstart(path: Path, tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    """Debug and CPU trainer presets merge over an experiment config (parse only for multi-process presets)."""
    args = ["fit", "--config", str(CONFIG_DIR / "quickstart.yaml"), "--config", str(path)]
    overrides = tiny_overrides(tiny_model, tiny_data, tmp_path / "run")
    if "ddp" in path.name:
        with pytest.raises(SystemExit) as exit_info:
            run_lightning_cli(args=args + overrides + ["--print_config"])
        assert exit_info.value.code in (0, None)  # --print_config exits 0; a parse error would be 2
        return
    cli = run_lightning_cli(args=args + overrides + ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                                                     "--trainer.limit_val_batches=1"])
    assert cli.trainer.state.finished


@pytest.mark.parametrize("path", [p for p in PRESETS if p.parent.name == "logger"], ids=_id)
def test_logger_presets_set_the_wandb_mode(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """configs/logger/*.yaml stack after an experiment and only choose the W&B mode (parse only: no network)."""
    with pytest.raises(SystemExit):
        run_lightning_cli(args=["fit", "--config", str(CONFIG_DIR / "quickstart.yaml"), "--config", str(path),
                                "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = {"wandb_offline.yaml": "offline", "wandb_online.yaml": "online", "csv_only.yaml": "disabled"}
    assert printed["wandb"]["mode"] == expected[path.name]
    assert yaml.safe_load(path.read_text()).keys() == {"wandb"}
