"""Every shipped YAML parses, and every experiment config runs a fast_dev_run with the tiny model swapped in."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fenlei.training.cli import run_lightning_cli
from tests.conftest import REPO_ROOT, tiny_overrides

CONFIG_DIR = REPO_ROOT / "configs"
ALL_YAML = sorted(CONFIG_DIR.rglob("*.yaml"))
# configs/zh/hub/ holds model presets (model.init_args.pretrained only) that stack after a configs/zh/ recipe.
PRESET_DIRS = {"debug", "trainer", "logger", "hub"}
# Sweep files and ablation specs are not LightningCLI configs: tests/ops/ validates them. configs/probe/ holds
# `fenlei probe` options: tests/probe/test_probe_ship.py runs each with a tiny model.
OPS_DIRS = {"sweeps", "ablations", "probe"}
EXPERIMENTS = [p for p in ALL_YAML if p.parent.name not in PRESET_DIRS | OPS_DIRS]
PRESETS = [p for p in ALL_YAML if p.parent.name in PRESET_DIRS]
# Numeric-target configs need numeric data: tests/test_numeric_target.py runs each of them on its own tiny data.
# Decoder configs need a tiny decoder: tests/training/test_decoder_configs.py runs each of them.
CLASSIFICATION_EXPERIMENTS = [p for p in EXPERIMENTS if p.parent.name not in ("gsm8k", "decoder")]
GPU_PRESETS = {"ddp_gpu.yaml", "fsdp.yaml"}
ZH_RECIPES = ["ce", "focal_ls", "invlog_weights", "staged_unfreezing", "logit_adjusted", "logit_adjusted_ls"]
ZH_HUB_MODELS = ["lert", "macbert", "roberta_wwm_ext", "rbt3", "deberta"]


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIG_DIR))


def test_configs_exist() -> None:
    names = {_id(p) for p in ALL_YAML}
    for required in ["quickstart.yaml", "focal_lert.yaml", "roberta_wwm_ext.yaml", "macbert.yaml", "rbt3.yaml",
                     "deberta.yaml", "bench/banking77_minilm.yaml", "bench/banking77_mpnet.yaml",
                     "debug/fast_dev_run.yaml", "debug/overfit_batches.yaml", "debug/limit_batches.yaml",
                     "trainer/ddp_cpu.yaml", "trainer/ddp_gpu.yaml", "trainer/fsdp.yaml", "zh/quickstart_zh.yaml",
                     *[f"zh/e5_{recipe}.yaml" for recipe in ZH_RECIPES],
                     *[f"zh/hub/{model}.yaml" for model in ZH_HUB_MODELS]]:
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


@pytest.mark.parametrize("path", [p for p in PRESETS
                                  if p.name not in GPU_PRESETS and p.parent.name not in ("logger", "hub")], ids=_id)
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


def _printed(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        run_lightning_cli(args=["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("model", ZH_HUB_MODELS)
def test_zh_hub_presets_change_only_the_model(model: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A configs/zh/hub/ preset names its model once: stacked on a recipe it changes the model (and with it the
    tokenizer) and nothing else. Parse only: no hub access."""
    preset = CONFIG_DIR / "zh" / "hub" / f"{model}.yaml"
    loaded = yaml.safe_load(preset.read_text())
    assert loaded.keys() == {"model"} and loaded["model"].keys() == {"init_args"}
    assert loaded["model"]["init_args"].keys() == {"pretrained"}
    pretrained = loaded["model"]["init_args"]["pretrained"]
    for recipe in ZH_RECIPES:
        base = _printed(["--config", str(CONFIG_DIR / "zh" / f"e5_{recipe}.yaml")], capsys)
        stacked = _printed(["--config", str(CONFIG_DIR / "zh" / f"e5_{recipe}.yaml"), "--config", str(preset)], capsys)
        assert base["model"]["init_args"]["pretrained"] == base["data"]["init_args"]["tokenizer"] == \
            "packaged:multilingual-e5-small"
        assert stacked["model"]["init_args"]["pretrained"] == stacked["data"]["init_args"]["tokenizer"] == pretrained
        for key in ("model", "data"):
            base[key]["init_args"].pop("pretrained" if key == "model" else "tokenizer")
            stacked[key]["init_args"].pop("pretrained" if key == "model" else "tokenizer")
        assert stacked == base


def test_zh_recipes_share_one_budget() -> None:
    """The four recipes differ only in their loss and callbacks (the study compares recipes, not budgets)."""
    def budget(recipe: str) -> dict:
        config = yaml.safe_load((CONFIG_DIR / "zh" / f"e5_{recipe}.yaml").read_text())
        config["model"]["init_args"].pop("loss")
        config["trainer"].pop("callbacks", None)
        return config

    first = budget(ZH_RECIPES[0])
    assert all(budget(recipe) == first for recipe in ZH_RECIPES[1:])
    assert first["trainer"]["max_epochs"] == 4 and first["trainer"]["precision"] == "bf16-mixed"
    init = first["model"]["init_args"]
    assert (init["lr"], init["head_lr"], init["pooling"]) == (1e-4, 3e-3, "mean")
    data = first["data"]["init_args"]
    assert (data["max_length"], data["batch_size"], data["data_dir"]) == (64, 32, "../shared/data/tnews_dataclue")
