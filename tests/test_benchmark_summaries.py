"""The target logic of benchmarks/chinese_encoders.py and its BENCHMARKS.md section, on made-up cells."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from benchmarks import render  # noqa: E402
from benchmarks.chinese_encoders import summarise  # noqa: E402


def cell(f1: float, speed: float = 40.0, acc: float | None = None) -> dict:
    return {"accuracy": acc if acc is not None else f1 + 0.02, "f1_macro": f1, "worst_class_f1": f1 / 2,
            "train_samples_per_s": speed, "cell_wall_seconds": 900.0, "inference_ms_per_text": 9.0,
            "date": "2026-12-01"}


def results(ce: list[float], focal: list[float], gemma: dict[str, tuple[float, float]] | None = None) -> dict:
    cells = {f"e5/ce/seed{i}": cell(v) for i, v in enumerate(ce, 1)}
    cells |= {f"e5/focal_ls/seed{i}": cell(v) for i, v in enumerate(focal, 1)}
    for route, (f1, speed) in (gemma or {}).items():
        cells[f"gemma/{route}"] = cell(f1, speed)
    return {"cells": {"tnews": cells}, "machine": {"cpu": {"model": "test CPU", "flags": ["avx2"], "cores": 2}}}


def test_target_needs_three_seeds_and_the_bound() -> None:
    checks = summarise(results([0.57, 0.58, 0.59], [0.585, 0.59, 0.595]))["tnews"]["checks"]
    assert checks["best_recipe"] == "e5/focal_ls"
    assert checks["target_f1_macro_58"]["met"] is True
    assert checks["target_f1_macro_58"]["measured"] == pytest.approx(0.59)
    two_seeds = summarise(results([0.57], [0.60, 0.61]))["tnews"]["checks"]["target_f1_macro_58"]
    assert two_seeds["met"] is False and two_seeds["note"] == "2 of 3 seeds run"
    low = summarise(results([0.57, 0.57, 0.57], [0.575, 0.576, 0.577]))["tnews"]["checks"]["target_f1_macro_58"]
    assert low["met"] is False


def test_focal_against_ce_is_judged_by_the_seed_spread() -> None:
    close = summarise(results([0.55, 0.57, 0.56], [0.565, 0.575, 0.57]))["tnews"]["checks"]["focal_ls_vs_ce"]
    assert close["f1_macro_gain_points"] == pytest.approx(1.0)
    assert close["larger_seed_spread_points"] == pytest.approx(2.0)
    assert close["beats_ce_by_more_than_spread"] is False
    clear = summarise(results([0.55, 0.551, 0.552], [0.58, 0.581, 0.582]))["tnews"]["checks"]["focal_ls_vs_ce"]
    assert clear["beats_ce_by_more_than_spread"] is True
    worse = summarise(results([0.58, 0.581, 0.582], [0.55, 0.551, 0.552]))["tnews"]["checks"]["focal_ls_vs_ce"]
    assert worse["beats_ce_by_more_than_spread"] is False  # beyond the spread, but below CE: not "beats"
    single = summarise(results([0.55], [0.58]))["tnews"]["checks"]["focal_ls_vs_ce"]
    assert single["beats_ce_by_more_than_spread"] is None  # one seed: no spread to beat, so no verdict


def test_gemma_comparison_needs_both_routes_margin_and_speed() -> None:
    base = [0.60, 0.60, 0.60]
    ok = summarise(results(base, base, {"probe": (0.40, 5.0), "lora_seqcls": (0.56, 2.0)}))["tnews"]["checks"]
    assert ok["beats_gemma"]["met"] is True
    assert ok["beats_gemma"]["f1_margin_points"] == {"gemma/probe": 20.0, "gemma/lora_seqcls": 4.0}
    slow = summarise(results(base, base, {"probe": (0.40, 10.0), "lora_seqcls": (0.50, 2.0)}))["tnews"]["checks"]
    assert slow["beats_gemma"]["met"] is False  # 40 samples/s is only 4x the probe's 10
    close = summarise(results(base, base, {"probe": (0.40, 1.0), "lora_seqcls": (0.58, 1.0)}))["tnews"]["checks"]
    assert close["beats_gemma"]["met"] is False  # 2 points over LoRA seq-cls
    one = summarise(results(base, base, {"probe": (0.40, 1.0)}))["tnews"]["checks"]
    assert one["beats_gemma"]["met"] is False and one["beats_gemma"]["routes_run"] == ["gemma/probe"]


def test_section_renders_every_route_and_the_verdicts() -> None:
    res = results([0.55, 0.56, 0.57], [0.58, 0.59, 0.60], {"probe": (0.40, 5.0), "lora_seqcls": (0.50, 2.0)})
    res["summary"] = summarise(res)
    text = render.render_chinese_encoders([res], {})
    assert "e5-small, cross-entropy | 3 | 58.00% (57.00%–59.00%) | 56.00% (55.00%–57.00%)" in text
    assert "gemma-3-270m, linear probe" in text and "LoRA sequence classification" in text
    assert "+3.00 macro-F1 points" in text and "**beats CE by more than the seed spread**" in text  # 2-point spread
    rows = {r.key: r for r in render.rows_chinese_encoders([res], {})}
    assert rows["target_f1_macro_58"].met == [True]
    assert rows["beats_gemma_tnews"].met == [True]
    assert "test CPU" in rows["target_f1_macro_58"].cpu


def test_speed_is_compared_only_on_one_cpu() -> None:
    base = [0.60, 0.60, 0.60]
    res = results(base, base, {"probe": (0.40, 5.0), "lora_seqcls": (0.50, 2.0)})
    for key, c in res["cells"]["tnews"].items():
        c["cpu"] = {"model": "CPU A" if key.startswith("e5/") else "CPU B"}
    c["precision"] = "bf16-mixed"
    summary = summarise(res)["tnews"]
    gemma = summary["checks"]["beats_gemma"]
    assert gemma["same_cpu"] is False and gemma["met"] is False  # margins and ratios pass, but across two CPUs
    assert summary["machines"] == ["CPU A", "CPU B", "CPU B, bf16-mixed"]
    res["summary"] = {"tnews": summary}
    row = {r.key: r for r in render.rows_chinese_encoders([res], {})}["beats_gemma_tnews"]
    assert "different CPUs" in row.measured
    assert "| CPU A |" in render.render_chinese_encoders([res], {})


def test_a_bundle_forced_past_its_gate_meets_no_deployment_target() -> None:
    import copy
    import json

    res = json.loads((render.RESULTS / "deploy_latency.json").read_text())
    res["bundle_parity"]["dynamic"]["forced"] = False
    gated = render.rows_deploy_latency([res], {})
    assert gated and [r.met for r in gated] == [[bool(res["targets"][r.key])] for r in gated]
    forced = copy.deepcopy(res)
    forced["bundle_parity"]["dynamic"]["forced"] = True
    rows = render.rows_deploy_latency([forced], {})
    assert [r.met for r in rows] == [[False]] * len(gated)
    assert all("not counted" in r.measured for r in rows)


def cascade_result(reviewer_share: float) -> dict:
    route = {"threshold": 0.8, "coverage": 0.5, "accuracy": 0.9, "accuracy_full_coverage": 0.7,
             "top_prediction_share": 0.4}
    cascade = {"texts": 10, "routed": 4, "share_routed": 0.4, "lm_texts": 4, "texts_per_s": 3.0, "fields": {
        "category": {"answered": 8, "uncertain": 2, "coverage": 0.8, "accuracy": 0.875, "accuracy_all": 0.7,
                     "top_prediction_share": 0.5,
                     "by_route": {"probe": {"texts": 6, "answered": 6, "accuracy": 1.0},
                                  "reviewer": {"texts": 4, "answered": 2, "accuracy": 0.5}}}}}
    entry = {"command": "benchmarks/cascade.py", "date": "2026-12-03", "machine": {"cpu": {"model": "X", "flags": ["avx2"]}},
             "fields": ["category"], "probe_threshold": 0.8, "reviewer_threshold": 0.5, "shared_model": True,
             "made_here": {"model": "m", "subset": {"train": {"rows": 600, "of": 4327}, "test": {"rows": 10, "of": 99}}},
             "probe_alone": {"category": route, "texts_per_s": 100.0},
             "reviewer_alone": {"category": {**route, "top_prediction_share": reviewer_share}, "texts_per_s": 5.0},
             "cascade_first": cascade, "cascade_all": cascade,
             "sweep": [{"probe_threshold": 0.8, "share_routed": 0.4, "coverage": 0.8, "accuracy": 0.875,
                        "accuracy_full_coverage": 0.7}]}
    return {"benchmark": "cascade_endava", "datasets": {"endava": entry}}


def test_cascade_section_shows_every_route_and_flags_a_collapsed_one() -> None:
    text = render.render_cascade([cascade_result(0.95)], {})
    assert "| probe alone | category | 50.00% | 90.00% | 45.00% | 70.00% |" in text  # 0.9 x 0.5 answered correctly
    assert "probe 100.00% of 6/6 answered, reviewer 50.00% of 2/4 answered" in text
    assert "95.00% **collapsed**" in text
    (row,) = render.rows_cascade([cascade_result(0.95)], {})
    assert "collapsed" in row.measured and row.met == []
    (row,) = render.rows_cascade([cascade_result(0.5)], {})
    assert "collapsed" not in row.measured and "cascade 87.50% on 80.00% answered (70.00% of all correct)" in row.measured


def test_a_notes_headings_sit_under_its_section() -> None:
    note = "# Title\n\ntext\n\n```\n# a shell comment\n```\n## Method\n#not a heading\n#### Deep"
    assert render.demote_headings(note).splitlines() == [
        "#### Title", "", "text", "", "```", "# a shell comment", "```", "##### Method", "#not a heading", "###### Deep"]


def test_a_speed_target_between_collapsed_decodings_is_not_met() -> None:
    def decoding(share: float | None) -> dict:
        return {"fields": {"category": {"accuracy": 0.66, "top_prediction_share": share}, "urgency": {}}}

    res = {"benchmark": "endava_tickets", "model": "m", "date": "2026-12-03", "machine": "x86_64, 2 CPUs",
           "target": {"definition": "label scoring >= 5x", "speedup": 7.0, "accuracy_delta": 0.0, "met": True}}
    for scoring, free, met in ((0.5, 0.6, True), (1.0, 1.0, False), (0.5, None, False), (0.95, 0.5, False)):
        (row,) = render.rows_decoder([{**res, "label_scoring": decoding(scoring), "free_generation": decoding(free)}], {})
        assert row.met == [met] and ("collapsed" in row.measured) == (not met)


def layer_sweep(difference: float) -> dict:
    return {"benchmark": "probe_layer_sweep", "command": "python benchmarks/probe_layer_sweep.py", "date": "2026-12-04",
            "machine": {"cpu": {"model": "test CPU", "flags": ["avx2"], "cores": 2}}, "torch_threads": 2,
            "model": "packaged:minilm", "data": "train.jsonl", "texts": 100, "layers": [0.5, -1], "max_length": 64,
            "batch_size": 16, "rounds": 2, "one_pass_seconds": 1.0, "per_layer_seconds": 1.8,
            "one_pass_texts_per_s": 100.0, "per_layer_texts_per_s": 55.6, "speedup": 1.8,
            "max_abs_feature_difference": difference}


def test_layer_sweep_section_shows_both_routes_and_whether_the_features_agree() -> None:
    text = render.render_probe_layer_sweep([layer_sweep(0.0)], {})
    assert "| 1.00 | 100.0 |" in text and "| 1.80 | 55.6 |" in text and "are identical" in text
    assert "NOT identical (largest difference 1.00e-03)" in render.render_probe_layer_sweep([layer_sweep(1e-3)], {})
    (row,) = render.rows_probe_layer_sweep([layer_sweep(0.0)], {})
    assert row.measured == "1.80x faster" and row.cpu.startswith("test CPU")


def decoder_result(scoring_acc: float, scoring_f1: float, share: float | None) -> dict:
    probe_heads = {"logreg": {"accuracy": 0.80, "f1_macro": 0.60, "worst_class_f1": 0.2},
                   "mlp": {"accuracy": 0.78, "f1_macro": 0.70, "worst_class_f1": 0.3}}
    first = {"accuracy": scoring_acc, "f1_macro": scoring_f1, "worst_class_f1": 0.1, "parse_failure_rate": 0.0,
             "hallucination_rate": 0.0, "top_prediction_share": share}
    scoring = {"accuracy": scoring_acc, "f1_macro": scoring_f1, "parse_failure_rate": 0.0, "hallucination_rate": 0.0,
               "examples_per_s": 5.0, "fields": {"category": first}}
    return {"benchmark": "online_shopping", "model": "m", "date": "2026-12-04", "command": "python x.py",
            "machine": {"cpu": {"model": "test CPU", "flags": ["avx2"], "cores": 2}}, "settings": {"max_length": 64, "lr": 3e-4, "batch_size": 8},
            "subset": {"train": {"rows": 10, "of": 20}, "test": {"rows": 5, "of": 9, "category_counts": {"a": 3, "b": 2}}},
            "label_scoring": scoring, "prefix_label_scoring": {**scoring, "accuracy": 0.5},
            "linear_probe": {"category": {"layer": 0.5, "pooling": "mean", "heads": probe_heads,
                                          "extraction": {"test": {"examples_per_s": 9.0}}}}}


def test_generative_route_is_judged_against_the_best_probe() -> None:
    # best probe by accuracy: logreg 80.0% / F1 60.0%
    for acc, f1, share, met in ((0.79, 0.61, 0.3, True), (0.77, 0.61, 0.3, False), (0.79, 0.59, 0.3, False),
                                (0.80, 0.65, 0.95, False), (0.80, 0.65, None, False)):
        row = [r for r in render.rows_decoder([decoder_result(acc, f1, share)], {}) if r.key == "generative_vs_probe"]
        assert len(row) == 1 and row[0].met == [met], (acc, f1, share)
        assert "(probe logreg)" in row[0].measured


def test_decoder_table_has_every_route_with_worst_class_f1_and_the_collapse_flag() -> None:
    text = render.render_decoder_benchmark([decoder_result(0.7, 0.5, 0.95)], {})
    assert "| prefix tuning, label scoring | 50.00% |" in text
    assert "| worst-class F1 |" in text and "95.00% **collapsed**" in text
    assert "| linear probe (mlp, layer 0.5, mean pooling) | 78.00% | 70.00% | 30.00% |" in text
    assert "prefix tuning, label scoring | probe (logreg) |" in text  # the per-field table has the prefix column
