"""benchmarks/label_noise.py's scoring (flips, precision/recall) and its BENCHMARKS.md section, on made-up numbers."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from benchmarks import render  # noqa: E402
from benchmarks.label_noise import detection_scores, flip_labels, retrain_summary  # noqa: E402


def test_flips_are_seeded_and_always_change_the_label() -> None:
    rows = [{"text": f"t{i}", "label": "abc"[i % 3]} for i in range(200)]
    noisy, truth = flip_labels(rows, 0.1, seed=4)
    assert len(truth) == 20 and flip_labels(rows, 0.1, seed=4) == (noisy, truth)
    assert flip_labels(rows, 0.1, seed=5)[1] != truth
    for line, original in truth.items():
        assert rows[line - 1]["label"] == original != noisy[line - 1]["label"]
    assert sum(a != b for a, b in zip(rows, noisy, strict=True)) == 20 and rows[0] == {"text": "t0", "label": "a"}


def review(*lines_and_suggestions: tuple[int, str]) -> list[dict]:
    return [{"al": {"train_line": line, "suggested_label": label}} for line, label in lines_and_suggestions]


def test_detection_scores() -> None:
    truth = {1: "a", 2: "b", 3: "c", 4: "a"}
    scores = detection_scores(review((1, "a"), (9, "b"), (2, "c"), (3, "c")), truth)
    assert (scores["flagged"], scores["true_positives"]) == (4, 3)
    assert scores["precision"] == 0.75 and scores["recall"] == 0.75 and scores["f1"] == 0.75
    assert scores["precision_at_flipped"] == 0.75  # the first 4 ranked rows
    assert scores["suggested_is_original"] == pytest.approx(0.6667, abs=1e-4)  # lines 1 and 3 of the 3 hits
    empty = detection_scores([], truth)
    assert empty["precision"] is None and empty["recall"] == 0.0 and empty["suggested_is_original"] is None


def result() -> dict:
    run = {"seed": 0, "flipped": 1000, "flagged": 1100, "precision": 0.7, "recall": 0.77, "f1": 0.73,
           "precision_at_flipped": 0.74, "suggested_is_original": 0.8, "oof_accuracy": 0.78, "seconds": 130.0}
    cells = {f"{v}/e5/ce/seed{s}": {"f1_macro": 0.5 + s / 100, "accuracy": 0.55} for v in ("dropped", "relabelled")
             for s in (1, 2, 3)}
    summary = retrain_summary(cells)
    summary["tables"]["ce"]["noisy"] = {"seeds": ["seed1", "seed2", "seed3"], "f1_macro": [0.5, 0.5, 0.5],
                                        "f1_macro_mean": 0.5, "accuracy_mean": 0.55}
    return {"benchmark": "label_noise", "command": "python benchmarks/label_noise.py", "date": "2026-12-02",
            "machine": {"cpu": {"model": "test CPU", "flags": ["avx2"], "cores": 2}}, "detector": "the detector",
            "banking77": {"rows": 10003, "classes": 77, "rate": 0.1, "folds": 5, "runs": [run, {**run, "seed": 1}],
                          "clean": {"flagged": 300, "flagged_share": 0.03, "oof_accuracy": 0.86},
                          "mean": {k: run[k] for k in ("precision", "recall")},
                          "range": {k: [run[k], run[k]] for k in ("precision", "recall")}},
            "tnews": {"rows": 10000, "classes": 15, "flagged": 2500, "flagged_share": 0.25, "oof_accuracy": 0.5,
                      "derived": {v: {"data_dir": f"benchmarks/work/label_noise/tnews/{v}", "train_rows": 7500}
                                  for v in ("dropped", "relabelled")},
                      "proxy_tfidf_logreg_test": {v: {"accuracy": 0.5, "f1_macro": 0.45}
                                                  for v in ("noisy", "dropped", "relabelled")}},
            "retrain": summary}


def test_section_renders_with_and_without_retrain_cells() -> None:
    res = result()
    text = render.render_label_noise([res], {})
    for line in text.splitlines():
        if line.startswith("| noise seed") or line.startswith("| 0 |"):
            assert line.count("|") == 11, line  # ten columns: no stray pipe in a header
    assert "| dropped | 50.00% | 45.00% | 51.00% (seed1), 52.00% (seed2), 53.00% (seed3) | 52.00% |" in text
    rows = render.rows_label_noise([res], {})
    assert [r.target for r in rows] == ["none set"] * 3 + ["≥ 58.0"] * 2
    assert rows[3].met == [False]  # a mean of 52.00% over 3 seeds
    assert "+2.00 pt, within the seed range" in rows[3].measured  # noisy 50 (range 0) against 51-53 (range 2)
    assert rows[0].measured == "70.00% (70.00%–70.00%) / 77.00% (77.00%–77.00%)"
    assert rows[2].measured.startswith("noisy 50.00% (3 seeds); dropped 52.00% (3 seeds)")
    res["retrain"] = retrain_summary({})
    assert len(render.rows_label_noise([res], {})) == 2
    assert "No e5 retrain has run yet" in render.render_label_noise([res], {})


def test_each_retrained_recipe_gets_its_own_columns_and_row() -> None:
    res = result()
    cells = {"dropped/e5/ce/seed1": {"f1_macro": 0.52, "accuracy": 0.6},
             "relabelled/e5/logit_adjusted_ls/seed2": {"f1_macro": 0.58, "accuracy": 0.62},
             "relabelled/e5/logit_adjusted_ls/seed1": {"f1_macro": 0.56, "accuracy": 0.6}}
    res["retrain"] = retrain_summary(cells)
    tables = res["retrain"]["tables"]
    assert set(tables) == {"ce", "logit_adjusted_ls"}
    assert tables["logit_adjusted_ls"]["relabelled"]["seeds"] == ["seed1", "seed2"]
    assert tables["logit_adjusted_ls"]["relabelled"]["f1_macro"] == [0.56, 0.58]  # in seed order
    assert tables["logit_adjusted_ls"]["relabelled"]["f1_macro_mean"] == pytest.approx(0.57)
    assert "dropped" not in tables["logit_adjusted_ls"]
    text = render.render_label_noise([res], {})
    header = next(line for line in text.splitlines() if line.startswith("| train set"))
    assert "e5 ce: mean" in header and "e5 logit_adjusted_ls: mean" in header
    assert "| relabelled | 50.00% | 45.00% |" in text and "56.00% (seed1), 58.00% (seed2) | 57.00% |" in text


def test_the_section_is_in_the_data_tools_group() -> None:
    groups = dict(render.GROUPS)
    assert [s.key for s in groups["Data tools"]] == ["label_noise"]


def test_a_cleaned_set_meets_the_bar_only_with_three_seeds_whose_mean_reaches_it() -> None:
    res = result()
    cells = {f"dropped/e5/ce/seed{s}": {"f1_macro": 0.60 + s / 100, "accuracy": 0.55} for s in (1, 2)}
    res["retrain"] = retrain_summary(cells)
    res["retrain"]["tables"]["ce"]["noisy"] = {"seeds": ["seed1", "seed2", "seed3"], "f1_macro": [0.5, 0.51, 0.52],
                                               "f1_macro_mean": 0.51, "accuracy_mean": 0.6}
    row = next(r for r in render.rows_label_noise([res], {}) if r.target == "≥ 58.0")
    assert row.met == [False] and "2 of 3 seeds" in row.measured  # two seeds are not a 3-seed mean
    res["retrain"] = retrain_summary({**cells, "dropped/e5/ce/seed3": {"f1_macro": 0.63, "accuracy": 0.55}})
    res["retrain"]["tables"]["ce"]["noisy"] = {"seeds": ["seed1", "seed2", "seed3"], "f1_macro": [0.5, 0.51, 0.52],
                                               "f1_macro_mean": 0.51, "accuracy_mean": 0.6}
    row = next(r for r in render.rows_label_noise([res], {}) if r.target == "≥ 58.0")
    assert row.met == [True] and "+11.00 pt, beyond the larger seed range" in row.measured
