"""A config names its model once: ``data.init_args.tokenizer`` follows ``model.init_args.pretrained`` unless set."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from datamodules import TextClassificationDataModule
from datamodules.readers import DataError
from fenlei.training.cli import run_lightning_cli
from tests.conftest import REPO_ROOT, tiny_overrides

QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")


def _without_tokenizer(overrides: list[str]) -> list[str]:
    return [arg for arg in overrides if not arg.startswith("--data.init_args.tokenizer=")]


def _printed(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        run_lightning_cli(args=["fit", "--config", QUICKSTART, *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_shipped_quickstart_names_the_model_once() -> None:
    assert "tokenizer" not in yaml.safe_load(Path(QUICKSTART).read_text())["data"]["init_args"]


def test_print_config_shows_the_models_tokenizer(capsys: pytest.CaptureFixture[str]) -> None:
    printed = _printed(["--model.init_args.pretrained=some/model"], capsys)
    assert printed["data"]["init_args"]["tokenizer"] == "some/model"


def test_an_explicit_tokenizer_wins(capsys: pytest.CaptureFixture[str]) -> None:
    printed = _printed(["--model.init_args.pretrained=some/model", "--data.init_args.tokenizer=other/tokenizer"],
                       capsys)
    assert printed["data"]["init_args"]["tokenizer"] == "other/tokenizer"
    assert printed["model"]["init_args"]["pretrained"] == "some/model"


def test_the_instantiated_datamodule_and_saved_config_get_the_models_tokenizer(
    tiny_model: Path, tiny_data: Path, tmp_path: Path
) -> None:
    overrides = _without_tokenizer(tiny_overrides(tiny_model, tiny_data, tmp_path / "run"))
    cli = run_lightning_cli(args=["--config", QUICKSTART, *overrides], run=False)
    assert cli.datamodule.tokenizer_name == str(tiny_model)
    # What SaveConfigCallback writes into config.yaml, which load_run, export and compare rebuild the DataModule from.
    assert yaml.safe_load(cli.parser.dump(cli.config))["data"]["init_args"]["tokenizer"] == str(tiny_model)


def test_the_explicit_tokenizer_reaches_the_datamodule(tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    # The DataModule loads its tokenizer lazily (at setup), so a name that is never loaded is enough here.
    overrides = _without_tokenizer(tiny_overrides(tiny_model, tiny_data, tmp_path / "run"))
    cli = run_lightning_cli(args=["--config", QUICKSTART, *overrides, "--data.init_args.tokenizer=other/tokenizer"],
                            run=False)
    assert cli.datamodule.tokenizer_name == "other/tokenizer"


def test_a_datamodule_without_any_tokenizer_says_so(tiny_data: Path) -> None:
    with pytest.raises(DataError, match="tokenizer: not set"):
        TextClassificationDataModule(data_dir=str(tiny_data))
