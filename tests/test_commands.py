"""Typed subcommands of ``fenlei``: every one offers --config and shows its defaults in --help, and a --config
YAML file gives the same run as the flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from fenlei.commands import COMMANDS, main
from tests.conftest import write_jsonl

# Commands whose --help is LightningCLI's own; every other command is typed (fenlei.typed_cli).
NOT_TYPED = {
    "fit", "validate", "test", "predict",  # LightningCLI
}
TYPED = [name for name in COMMANDS if name not in NOT_TYPED]


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0, argv
    return capsys.readouterr().out


def sub_subcommands(text: str) -> list[str]:
    """The choices of ``fenlei data {dedup,mask,...} ...`` in a usage line (a bool's {true,false} has no ...)."""
    # The usage may wrap between the choices and the "...".
    found = re.search(r"\{(\w+(?:,\w+)+)\}\s+\.\.\.", text)
    return found.group(1).split(",") if found else []


@pytest.mark.parametrize("name", TYPED)
def test_help_offers_config_and_shows_defaults(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text([name], capsys)
    assert "--config CONFIG" in text and f"usage: fenlei {name}" in text
    # A command with operations (fenlei data dedup): each operation's help has the options and their defaults.
    texts = {sub: help_text([name, sub], capsys) for sub in sub_subcommands(text)} or {name: text}
    for sub, sub_text in texts.items():
        assert "--config CONFIG" in sub_text and "type:" in sub_text, sub
        # Every option shows its default, or says it is required (fenlei merge has only required options).
        options = re.findall(r"^  (--\w+) ", sub_text, flags=re.M)
        described = re.split(r"^  --", sub_text, flags=re.M)[1:]
        assert len(described) >= len(options) > 0, sub
        for block in described:
            if block.startswith(("help", "config", "print_config")):
                continue
            flat = " ".join(block.split())
            assert "default:" in flat or "required" in flat, (sub, block[:60])


def test_data_and_al_list_their_operations(capsys: pytest.CaptureFixture[str]) -> None:
    assert sub_subcommands(help_text(["data"], capsys)) == ["dedup", "mask", "split", "stats", "oversample", "augment",
                                                               "leakage", "noise"]
    assert sub_subcommands(help_text(["al"], capsys)) == ["select", "merge"]


def test_config_file_gives_the_same_result_as_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": i, "text": f"text {i}", "cls": "ab"[i % 2]} for i in range(40)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    with pytest.raises(SystemExit) as info:
        main(["data", "split", "--input", str(src), "--out_dir", str(tmp_path / "flags"), "--ratios", "0.5", "0.25",
              "0.25", "--seed", "3", "--label_field", "cls"])
    assert info.value.code == 0
    from_flags = capsys.readouterr().out
    config = tmp_path / "split.yaml"
    config.write_text(yaml.safe_dump({"input": str(src), "out_dir": str(tmp_path / "config"),
                                      "ratios": [0.5, 0.25, 0.25], "seed": 3, "label_field": "cls"}))
    with pytest.raises(SystemExit) as info:
        main(["data", "split", "--config", str(config)])
    assert info.value.code == 0
    from_config = capsys.readouterr().out
    assert from_config.replace(str(tmp_path / "config"), "OUT") == from_flags.replace(str(tmp_path / "flags"), "OUT")
    assert "train 20 rows / 2 classes" in from_flags
    for name in ("train", "validation", "test"):
        assert (tmp_path / "config" / f"{name}.jsonl").read_bytes() == (tmp_path / "flags" / f"{name}.jsonl").read_bytes()
