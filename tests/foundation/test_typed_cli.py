"""fenlei.typed_cli: the old argparse spellings (bare bool flags, several words per list option, positionals,
arguments after ``--``) reach a typed function unchanged, and --config gives the same call as the flags."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Union

import pytest

from fenlei.typed_cli import normalize_argv, run_typed

CALLS: list[dict[str, Any]] = []


def trial(file: str, *, count: Optional[int] = None, seeds: Optional[list[int]] = None,
          fields: Sequence[str] = ("text",), head: Sequence[Literal["logreg", "mlp"]] = ("logreg",),
          layer: Union[int, float] = 0.5, dry_run: bool = False, extra_args: Optional[list[str]] = None) -> int:
    """A command with one positional file.

    Args:
        file: the file
        count: how many
        seeds: seeds
        fields: fields
        head: heads
        layer: an index or a fraction
        dry_run: only print
        extra_args: arguments after --
    """
    CALLS.append({"file": file, "count": count, "seeds": seeds, "fields": list(fields), "head": list(head),
                  "layer": layer, "dry_run": dry_run, "extra_args": extra_args})
    return 3


def several(models: list[str], *, data: str, names: Optional[list[str]] = None) -> None:
    """A command with a list positional.

    Args:
        models: the models
        data: the data
        names: display names
    """
    CALLS.append({"models": models, "data": data, "names": names})


def call(component: Any, argv: list[str], **kwargs: Any) -> tuple[int, dict[str, Any]]:
    CALLS.clear()
    status = run_typed(component, argv, prog="fenlei test", **kwargs)
    return status, CALLS[-1]


def test_old_spellings_reach_the_function() -> None:
    argv = ["f.yaml", "--count", "2", "--seeds", "1", "2", "--fields", "1", "a: b", "null", "--head", "mlp",
            "--layer", "-1", "--dry_run", "--", "--config", "x.yaml", "--trainer.max_epochs=1"]
    status, got = call(trial, argv, positional=True, rest="extra_args")
    assert status == 3
    assert got == {"file": "f.yaml", "count": 2, "seeds": [1, 2], "fields": ["1", "a: b", "null"], "head": ["mlp"],
                   "layer": -1, "dry_run": True, "extra_args": ["--config", "x.yaml", "--trainer.max_epochs=1"]}
    _, got = call(trial, ["--layer", "0.25", "f.yaml", "--no-dry_run", "--fields", "[a, b]"], positional=True)
    assert got["layer"] == 0.25 and isinstance(got["layer"], float) and got["file"] == "f.yaml"
    assert got["dry_run"] is False and got["fields"] == ["a", "b"] and got["extra_args"] is None


def test_list_positional_takes_every_word() -> None:
    _, got = call(several, ["runs/a", "--data", "t.jsonl", "runs/b", "--names", "x", "y"], positional=True)
    assert got == {"models": ["runs/a", "runs/b"], "data": "t.jsonl", "names": ["x", "y"]}


def test_sub_subcommands_are_normalized_by_their_own_signature() -> None:
    assert normalize_argv({"one": several, "two": trial}, ["two", "f", "--dry_run", "--seeds", "4"], True) == [
        "two", "f", "--dry_run=true", '--seeds=["4"]']
    _, got = call({"one": several, "two": trial}, ["one", "r", "--data", "d"], positional=True)
    assert got["models"] == ["r"]


def test_config_file_gives_the_same_call_as_the_flags(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("count: 2\nseeds: [1, 2]\ndry_run: true\nextra_args: ['--a=1']\n")
    _, from_flags = call(trial, ["f", "--count", "2", "--seeds", "1", "2", "--dry_run", "--", "--a=1"],
                         positional=True, rest="extra_args")
    _, from_config = call(trial, ["f", "--config", str(config)], positional=True, rest="extra_args")
    assert from_config == from_flags
    _, both = call(trial, ["f", "--config", str(config), "--", "--b=2"], positional=True, rest="extra_args")
    assert both["extra_args"] == ["--a=1", "--b=2"]  # after --: appended to the file's list


def test_help_shows_types_defaults_and_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_typed(trial, ["--help"], prog="fenlei test", positional=True)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--config CONFIG" in out and "default: ('text',)" in out and "an index or a fraction" in out
    assert "usage: fenlei test" in out and "\n  FILE  " in out  # the positional is named by its parameter
