"""Ablations: spec validation, 2 variants x 1 seed with fit + test on the tiny model, table + PNG, resume."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from fenlei.ops import ablate
from fenlei.ops.runs import OpsError
from tests.conftest import REPO_ROOT, tiny_overrides

QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")


def write_spec(path: Path, **fields: Any) -> Path:
    spec = {"base": [QUICKSTART], "seeds": [7], "metric": "test/f1_macro",
            "variants": {"ce": {}, "focal": {"model.init_args.loss": {"class_path": "losses.FocalLoss",
                                                                     "init_args": {"gamma": 2.0}}}},
            "runs_dir": str(path.parent / "runs")}
    spec.update(fields)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def extra_args(tiny_model: Path, tiny_data: Path) -> list[str]:
    keep = [a for a in tiny_overrides(tiny_model, tiny_data, Path("unused")) if not a.startswith("--trainer.default_root_dir")]
    return keep + ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.precision=32-true",
                   "--trainer.num_sanity_val_steps=0"]


@pytest.fixture(scope="module")
def ablation(tiny_model: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("ablate")
    path = write_spec(tmp / "loss.yaml")
    code = ablate.main([str(path), "--", *extra_args(tiny_model, tiny_data)])
    return {"code": code, "path": path, "runs": tmp / "runs"}


def test_ablation_runs_every_variant_and_writes_table_and_chart(ablation: dict[str, Any]) -> None:
    assert ablation["code"] == 0
    runs = ablation["runs"]
    for variant in ("ce", "focal"):
        run_dir = runs / variant / "seed-7"
        assert (run_dir / "run_summary.json").is_file() and (run_dir / "test" / "metrics.json").is_file()
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved["seed_everything"] == 7
        expected = "losses.FocalLoss" if variant == "focal" else "losses.CrossEntropyLoss"
        assert saved["model"]["init_args"]["loss"]["class_path"] == expected
    table = list(csv.DictReader((runs / "ablation.csv").open()))
    assert [r["variant"] for r in table] == ["ce", "focal"]  # spec order, baseline first
    for row in table:
        metrics = json.loads((runs / row["variant"] / "seed-7" / "test" / "metrics.json").read_text())
        assert int(row["n"]) == 1 and math.isclose(float(row["mean"]), metrics["test/f1_macro"], abs_tol=1e-9)
        assert float(row["std"]) == 0.0
    assert float(table[0]["delta"]) == 0.0
    assert math.isclose(float(table[1]["delta"]), float(table[1]["mean"]) - float(table[0]["mean"]), abs_tol=1e-9)
    assert (runs / "ablation.md").read_text().startswith("# Ablation loss: test/f1_macro")
    assert (runs / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(csv.DictReader((runs / "runs.csv").open()))) == 2


def test_rerun_skips_finished_runs(ablation: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    runs = ablation["runs"]
    stamp = (runs / "ce" / "seed-7" / "test" / "metrics.json").stat().st_mtime_ns
    # No tiny-model arguments this time: a rerun that trained again would fail on the packaged model path.
    assert ablate.main([str(ablation["path"]), "--", "--wandb.mode=disabled"]) == 0
    assert (runs / "ce" / "seed-7" / "test" / "metrics.json").stat().st_mtime_ns == stamp
    statuses = [r["status"] for r in csv.DictReader((runs / "runs.csv").open())]
    assert statuses == ["skipped", "skipped"]


def test_summary_statistics_over_seeds() -> None:
    spec = ablate.AblationSpec(path=Path("x"), name="x", base=[], seeds=[1, 2, 3], metric="m", goal="maximize",
                               variants={"a": [], "b": []}, runs_dir=Path("r"), test=False)
    runs = [{"variant": "a", "m": v} for v in (0.5, 0.7, 0.6)] + [{"variant": "b", "m": v} for v in (0.8, None, 0.9)]
    rows = ablate.summarize(spec, runs)
    assert rows[0]["n"] == 3 and math.isclose(rows[0]["mean"], 0.6) and math.isclose(rows[0]["std"], 0.1)
    assert rows[1]["n"] == 2 and math.isclose(rows[1]["mean"], 0.85) and math.isclose(rows[1]["delta"], 0.25)
    assert rows[1]["values"] == "0.8000 0.9000"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"base": []}, "base: must be a config file or a list"),
        ({"base": ["nope.yaml"]}, "base: no such config file 'nope.yaml'"),
        ({"seeds": [1, 1]}, "seeds: has duplicates"),
        ({"seeds": ["a"]}, "seeds: must be a non-empty list of integers"),
        ({"variants": {}}, "variants: must be a non-empty mapping"),
        ({"variants": {"a": 3}}, "variants.a: must be a mapping of dotted keys"),
        ({"variants": {"a": ["missing.yaml"]}}, "variants.a: 'missing.yaml' is not a config file"),
        ({"metric": "test/f1_macro", "test": False}, "test: metric test/f1_macro needs test: true"),
        ({"goal": "up"}, "goal: must be maximize or minimize"),
        ({"variant": {}}, "unknown key(s) variant"),
    ],
)
def test_spec_errors_name_the_key(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    path = write_spec(tmp_path / "spec.yaml", **fields)
    with pytest.raises(OpsError) as info:
        ablate.load_spec(path)
    assert str(path) in str(info.value) and message in str(info.value)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs" / "ablations").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_spec_is_valid_and_every_variant_parses(path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from fenlei.training.cli import run_lightning_cli

    monkeypatch.chdir(REPO_ROOT)
    spec = ablate.load_spec(path.relative_to(REPO_ROOT))
    assert len(spec.variants) >= 2 and spec.seeds
    printed = []
    for variant_args in spec.variants.values():
        commands = ablate.run_commands(spec, variant_args, spec.seeds[0], Path("r"), [])
        assert commands[0][0] == "fit" and (not spec.test or commands[1][-1] == "--ckpt_path=best")
        with pytest.raises(SystemExit) as info:
            run_lightning_cli(args=[*commands[0], "--print_config"])
        assert info.value.code in (0, None)
        config = yaml.safe_load(capsys.readouterr().out)
        printed.append({"model": config["model"], "callbacks": config["trainer"].get("callbacks")})
    # every variant changes the model (its loss, say) or the training callbacks (staged unfreezing)
    assert len({json.dumps(p, sort_keys=True) for p in printed}) == len(printed)
