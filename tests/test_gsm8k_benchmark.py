"""benchmarks/gsm8k_lengths.py's seed averaging and its BENCHMARKS.md section, on made-up numbers."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from benchmarks import render  # noqa: E402
from benchmarks.gsm8k_lengths import over_seeds  # noqa: E402


def seed_run(name: str, module: str, seed: int, target_mae: float, scheme: str = "quantile") -> dict:
    return {"name": name, "seed": seed, "machine": {"cpu": {"model": "test CPU"}}, "description": "d",
            "module": module, "scheme": scheme, "num_bins": 4, "train_bin_sizes": [1, 1, 1, 1], "balance": 1.0,
            "silhouette": 0.5, "outliers_removed": 0, "accuracy": 0.4, "macro_f1": 0.3 + seed / 100,
            "min_bin_f1": 0.2, "mae_bins": 0.8, "qwk": 0.5, "target_mae": target_mae, "constant_mae": 30.0,
            "target_mae_vs_constant": target_mae / 30.0, "target_spearman": 0.6, "train_s": 60.0,
            "precision": "bf16-mixed", "best_epoch_score": 0.5,
            "transfer_alpaca": {"acc": 0.3, "f1_macro": 0.2, "target_mae": 100.0 + seed, "qwk": 0.1, "constant_mae": 90.0}}


def test_over_seeds_means_each_figure_and_keeps_the_range_and_every_seed() -> None:
    run = over_seeds([seed_run("a", "EncoderRegressor", s, mae) for s, mae in ((3, 22.0), (1, 20.0), (2, 21.0))])
    assert run["seeds"] == [1, 2, 3] and "seed" not in run and "machine" not in run
    assert run["target_mae"] == pytest.approx(21.0) and run["spread"]["target_mae"] == pytest.approx(2.0)
    assert run["macro_f1"] == pytest.approx(0.32) and run["transfer_alpaca"]["target_mae"] == pytest.approx(102.0)
    assert run["spread"]["transfer_target_mae"] == pytest.approx(2.0)
    assert run["transfer_alpaca"]["constant_mae"] == 90.0  # not seeded: the first seed's
    assert [p["seed"] for p in run["per_seed"]] == [1, 2, 3] and run["per_seed"][0]["target_mae"] == 20.0
    assert run["per_seed"][0]["machine"] == {"cpu": {"model": "test CPU"}}


def result(runs: list[dict]) -> dict:
    return {"benchmark": "gsm8k_lengths", "command": "python benchmarks/gsm8k_lengths.py --seeds 1 2 3",
            "date": "2026-12-02", "machine": {"cpu": {"model": "test CPU", "flags": ["amx_bf16"], "cores": 2}},
            "budget": {"encoder": "packaged:minilm", "epochs": 2, "batch_size": 32, "max_length": 128,
                       "freeze_layers": None, "train_rows": "all", "test_rows": "all", "transfer_rows": "all"},
            "skipped": {}, "seeds": sorted({s for r in runs for s in r["seeds"]}), "runs": runs}


def test_section_shows_the_spread_and_says_whether_regressors_beat_bins_beyond_it() -> None:
    regressor = over_seeds([seed_run("reg", "EncoderRegressor", s, 20.0 + s / 10) for s in (1, 2, 3)])
    classifier = over_seeds([seed_run("bins", "BinClassifier", s, 24.0 + s) for s in (1, 2, 3)])
    kmeans = over_seeds([seed_run("km", "BinClassifier", s, 27.0, scheme="kmeans") for s in (1, 2, 3)])
    text = render.render_gsm8k_lengths([result([regressor, classifier, kmeans])], {})
    assert "seeds 1, 2, 3" in text
    assert "| **20.20 ± 0.10** |" in text and "| **26.00 ± 1.00** |" in text
    assert "`reg` 20.20 words, against the best classifier, `bins` 26.00: more than the larger seed range" in text
    assert "1 of 1 regressor/ordinal configs beat every classifier over bins" in text
    assert "`km` silhouette 0.500" in text
    header = next(line for line in text.splitlines() if line.startswith("| config | module"))
    row = next(line for line in text.splitlines() if line.startswith("| `reg`"))
    assert header.count("|") == row.count("|")  # a column per header cell


def test_an_overlap_within_the_spread_is_not_called_a_difference_and_one_seed_is_undecided() -> None:
    regressor = over_seeds([seed_run("reg", "EncoderRegressor", s, 20.0 + s) for s in (1, 2, 3)])
    classifier = over_seeds([seed_run("bins", "BinClassifier", s, 22.0 + s) for s in (1, 2, 3)])
    assert render.beyond_spread(regressor, classifier) is False
    text = render.render_gsm8k_lengths([result([regressor, classifier])], {})
    assert "**not** more than the larger seed range" in text
    single = [over_seeds([seed_run("reg", "EncoderRegressor", 1, 20.0)]),
              over_seeds([seed_run("bins", "BinClassifier", 1, 30.0)])]
    text = render.render_gsm8k_lengths([result(single)], {})
    assert "undecided (fewer than 2 seeds)" in text and "±" not in text.split("| config | module")[1]


def test_seeds_kept_only_in_the_results_file_are_read_back_at_the_same_budget(tmp_path, monkeypatch) -> None:
    from benchmarks import gsm8k_lengths

    budget = result([])["budget"]
    run = over_seeds([seed_run("a", "EncoderRegressor", s, mae) for s, mae in ((1, 20.0), (2, 22.0))])
    path = tmp_path / "gsm8k_lengths.json"
    path.write_text(json.dumps(result([run])))
    monkeypatch.setattr(gsm8k_lengths, "RESULT", path)
    found = gsm8k_lengths.recorded_seeds(budget, {"a", "b"})
    assert sorted(found["a"]) == [1, 2] and found["a"][2]["target_mae"] == 22.0
    assert found["a"][1]["module"] == "EncoderRegressor" and found["a"][1]["transfer_alpaca"]["constant_mae"] == 90.0
    again = over_seeds([*found["a"].values(), seed_run("a", "EncoderRegressor", 3, 24.0)])  # a new seed joins them
    assert again["seeds"] == [1, 2, 3] and again["target_mae"] == pytest.approx(22.0)
    assert gsm8k_lengths.recorded_seeds({**budget, "epochs": 1}, {"a"}) == {}  # another budget: not reused
    assert gsm8k_lengths.recorded_seeds(budget, {"b"}) == {}


def test_the_recorded_command_names_every_seed_in_the_figures() -> None:
    from benchmarks.gsm8k_lengths import reproducing_command

    assert reproducing_command(["--seeds", "2", "3"], [1, 2, 3]) == "python benchmarks/gsm8k_lengths.py --seeds 1 2 3"
    assert (reproducing_command(["--smoke", "--seeds", "2", "--force"], [1, 2])
            == "python benchmarks/gsm8k_lengths.py --smoke --force --seeds 1 2")
