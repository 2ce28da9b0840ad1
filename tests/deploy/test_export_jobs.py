"""The export's jobs with plain values: parity gate, quantization attempts, calibration, options, bundle checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fenlei.deploy.calibration_step import CalibrationOptions, bundle_calibration, calibration_entry
from fenlei.deploy.errors import ExportError
from fenlei.deploy.export import compatible_argv, parse_options
from fenlei.deploy.parity import GateLimits, failure_message, gate_attempts, parity_report, token_mismatches
from fenlei.deploy.quantization import (
    NO_FFN_OUTPUTS,
    QuantizationOptions,
    attempts_for_graph,
    quantization_attempts,
    sample_texts,
    untried_remedies,
)
from fenlei.deploy.staging import check_out

LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def _logits(pred: list[int], classes: int = 3) -> np.ndarray:
    out = np.zeros((len(pred), classes), dtype=np.float32)
    out[np.arange(len(pred)), pred] = 5.0
    return out


REFERENCE = _logits(list(LABELS))


# ----------------------------------------------------------------------------------------------- parity gate


def test_parity_report_passes_identical_and_fails_past_each_limit() -> None:
    same = parity_report(LABELS, REFERENCE, {"ort_fp32": REFERENCE.copy()}, GateLimits())
    assert same["passed"] and same["engines"]["ort_fp32"]["agreement_vs_torch"] == 1.0
    assert same["engines"]["ort_fp32"]["macro_f1_change_pt"] == 0.0 and same["engines"]["torch_fp32"]["accuracy"] == 1.0

    one_off = _logits([0, 1, 2, 0, 1, 2, 0, 1, 2, 1])  # 9/10 agree
    report = parity_report(LABELS, REFERENCE, {"ort_int8": one_off}, GateLimits(min_agreement=0.95, max_f1_change_pt=50))
    assert not report["passed"] and report["failures"] == ["ort_int8: argmax agreement with torch fp32 0.9000 < 0.95"]
    report = parity_report(LABELS, REFERENCE, {"ort_int8": one_off}, GateLimits(min_agreement=0.9, max_f1_change_pt=1.0))
    assert not report["passed"] and len(report["failures"]) == 1 and "macro-F1 change -" in report["failures"][0]
    assert parity_report(LABELS, REFERENCE, {"ort_int8": one_off}, GateLimits(0.9, 50))["passed"]
    assert report["limits"] == {"min_agreement": 0.9, "max_f1_change_pt": 1.0}


def test_token_mismatches() -> None:
    assert token_mismatches([[1, 2], (3,)], [[1, 2], [3]]) == 0
    assert token_mismatches([[1, 2], [3, 4]], [[1, 2], [3]]) == 1


def _attempt_runner(passing: set[tuple[bool, bool]], calls: list[tuple[bool, bool]]) -> Any:
    bad = _logits([1] * len(LABELS))

    def try_attempt(attempt: tuple[bool, bool]) -> tuple[dict[str, Any], dict[str, np.ndarray], float]:
        calls.append(attempt)
        logits = REFERENCE if attempt in passing else bad
        return {"reduce_range": attempt[0]}, {"ort_fp32": REFERENCE, "ort_int8": logits}, 1.5

    return try_attempt


def test_gate_attempts_stop_at_the_first_that_passes() -> None:
    calls: list[tuple[bool, bool]] = []
    messages: list[str] = []
    attempts = [(False, False), (True, False), (True, True)]
    outcome = gate_attempts(attempts, _attempt_runner({(True, False)}, calls), LABELS, REFERENCE, GateLimits(),
                            log=messages.append)
    assert calls == [(False, False), (True, False)]
    assert outcome.parity["passed"] and outcome.quantization["reduce_range"] is True
    assert [(a["reduce_range"], a["passed"], a["size_mb"]) for a in outcome.quantization["attempts"]] == [
        (False, False, 1.5), (True, True, 1.5)]
    assert any("retrying with 7-bit weights" in m for m in messages)
    np.testing.assert_array_equal(outcome.logits["ort_int8"], REFERENCE)


def test_gate_attempts_all_failing_choose_the_closest_and_keep_every_verdict() -> None:
    calls: list[tuple[bool, bool]] = []
    messages: list[str] = []
    attempts = [(False, False), (True, False), (True, True)]
    outcome = gate_attempts(attempts, _attempt_runner(set(), calls), LABELS, REFERENCE, GateLimits(),
                            log=messages.append)
    assert calls == attempts and not outcome.parity["passed"]
    assert [a["passed"] for a in outcome.quantization["attempts"]] == [False, False, False]
    assert any("and the FFN output projections in fp32" in m for m in messages)
    message = failure_message(10, outcome.parity, outcome.quantization["attempts"], ["--per_channel"])
    assert message.startswith("parity gate failed on 10 held-out texts: ort_int8: argmax agreement")
    assert "(tried reduce_range=False keep_ffn_out_fp32=False; " in message
    assert message.endswith("(try --per_channel, --force to ship anyway)")
    assert outcome.chosen == 0 and outcome.quantization["shipped_attempt"] == 1  # a tie: the first (smallest) one

    # The middle attempt misses one text in ten, the others every other one: a forced export ships the middle one.
    near = _logits([0, 1, 2, 0, 1, 2, 0, 1, 2, 1])
    far = _logits([1, 1, 1, 1, 1, 1, 1, 1, 1, 1])

    def try_attempt(attempt: tuple[bool, bool]) -> tuple[dict[str, Any], dict[str, np.ndarray], float]:
        return {"reduce_range": attempt[0], "ffn": attempt[1]}, {"ort_int8": near if attempt == (True, False) else far}, 1.0

    outcome = gate_attempts(attempts, try_attempt, LABELS, REFERENCE, GateLimits(), log=messages.append)
    assert outcome.chosen == 1 and (outcome.quantization["reduce_range"], outcome.quantization["ffn"]) == (True, False)
    assert outcome.parity["engines"]["ort_int8"]["agreement_vs_torch"] == 0.9
    np.testing.assert_array_equal(outcome.logits["ort_int8"], near)
    assert messages[-1] == "no attempt passed the gate; the closest was attempt 2 (7-bit weights)"


def test_a_tokenizer_mismatch_fails_the_first_attempt_and_ends_the_search() -> None:
    calls: list[tuple[bool, bool]] = []
    outcome = gate_attempts([(False, False), (True, False)], _attempt_runner({(False, False)}, calls), LABELS,
                            REFERENCE, GateLimits(), tokenizer_mismatches=3)
    assert calls == [(False, False)] and not outcome.parity["passed"]
    assert outcome.parity["failures"] == ["tokenizer.json disagrees with the training tokenizer on 3 texts"]
    with pytest.raises(ValueError, match="no quantization attempt"):
        gate_attempts([], _attempt_runner(set(), []), LABELS, REFERENCE, GateLimits())


# ----------------------------------------------------------------------------------------------- quantization


def test_attempt_order_and_defaults() -> None:
    # (reduce_range, keep_ffn_out_fp32, weight_only, fp32_attention): smallest models first, the fp32 FFN
    # outputs last.
    assert quantization_attempts(QuantizationOptions()) == [(False, False, False, False), (True, False, False, False),
                                                            (False, False, True, False), (False, False, True, True),
                                                            (True, True, False, False)]
    assert quantization_attempts(QuantizationOptions(keep_ffn_out_fp32=False)) == [
        (False, False, False, False), (True, False, False, False), (False, False, True, False),
        (False, False, True, True)]
    assert quantization_attempts(QuantizationOptions(weight_only_matmuls=False)) == [
        (False, False, False, False), (True, False, False, False), (True, True, False, False)]
    assert quantization_attempts(QuantizationOptions(fp32_attention=False))[2:] == [
        (False, False, True, False), (True, True, False, False)]
    assert quantization_attempts(QuantizationOptions(weight_only_matmuls=True)) == [(False, False, True, False)]
    assert quantization_attempts(QuantizationOptions(fp32_attention=True)) == [(False, False, True, True)]
    assert quantization_attempts(QuantizationOptions(mode="static", keep_ffn_out_fp32=True)) == [
        (False, True, False, False)]
    assert quantization_attempts(QuantizationOptions(mode="static", reduce_range=True)) == [(True, False, False, False)]
    with pytest.raises(ExportError, match="--weight_only_matmuls: only with --quantization dynamic"):
        quantization_attempts(QuantizationOptions(mode="static", weight_only_matmuls=True))
    with pytest.raises(ExportError, match="--fp32_attention: only with --quantization dynamic"):
        quantization_attempts(QuantizationOptions(mode="static", fp32_attention=True))
    with pytest.raises(ExportError, match="--fp32_attention needs the weight-only MatMuls"):
        quantization_attempts(QuantizationOptions(fp32_attention=True, weight_only_matmuls=False))
    assert QuantizationOptions().head_fp32 and not QuantizationOptions(mode="static").head_fp32
    assert QuantizationOptions(mode="static", keep_head_fp32=True).head_fp32
    assert not QuantizationOptions(keep_head_fp32=False).head_fp32


def test_graphs_without_ffn_outputs_drop_the_ffn_attempt_or_refuse_the_flag() -> None:
    attempts = quantization_attempts(QuantizationOptions())
    assert attempts_for_graph(attempts, True, QuantizationOptions()) == attempts
    assert attempts_for_graph(attempts, False, QuantizationOptions()) == [
        (False, False, False, False), (True, False, False, False), (False, False, True, False),
        (False, False, True, True)]
    with pytest.raises(ExportError, match="--keep_ffn_out_fp32: the graph has no FFN"):
        attempts_for_graph(attempts, False, QuantizationOptions(keep_ffn_out_fp32=True))
    assert NO_FFN_OUTPUTS.startswith("--keep_ffn_out_fp32")


def test_ffn_output_projections_of_encoders_and_decoders() -> None:
    from types import SimpleNamespace

    from fenlei.deploy.onnx_tools import ffn_output_nodes

    names = ["/bert/encoder/layer.0/attention/output/dense/MatMul", "/bert/encoder/layer.0/intermediate/dense/MatMul",
             "/bert/encoder/layer.0/output/dense/MatMul", "/model/layers.0/self_attn/o_proj/MatMul",
             "/model/layers.0/mlp/up_proj/MatMul", "/model/layers.0/mlp/down_proj/MatMul", "/score/MatMul"]
    nodes = [SimpleNamespace(name=n, op_type="MatMul") for n in names]
    assert ffn_output_nodes(nodes) == ["/bert/encoder/layer.0/output/dense/MatMul", "/model/layers.0/mlp/down_proj/MatMul"]


def test_graphs_without_fused_attention_drop_the_fp32_attention_attempt_or_refuse_the_flag() -> None:
    attempts = quantization_attempts(QuantizationOptions())
    assert attempts_for_graph(attempts, True, QuantizationOptions(), has_attention=False) == [
        a for a in attempts if not a.fp32_attention] != attempts
    with pytest.raises(ExportError, match="--fp32_attention: the graph has no fused Attention"):
        attempts_for_graph(attempts, True, QuantizationOptions(fp32_attention=True), has_attention=False)


def test_untried_remedies_name_only_unused_options() -> None:
    tried = [{"reduce_range": False, "keep_ffn_out_fp32": False}, {"reduce_range": True, "keep_ffn_out_fp32": False}]
    assert untried_remedies(QuantizationOptions(), tried) == ["--keep_ffn_out_fp32", "--weight_only_matmuls",
                                                             "--fp32_attention"]
    assert untried_remedies(QuantizationOptions(), [*tried, {**tried[0], "weight_only": True}]) == [
        "--keep_ffn_out_fp32", "--fp32_attention"]
    assert untried_remedies(QuantizationOptions(), [*tried, {**tried[0], "weight_only": True,
                                                             "fp32_attention": True}]) == ["--keep_ffn_out_fp32"]
    static = QuantizationOptions(mode="static", per_channel=False)
    assert untried_remedies(static, tried[:1]) == ["--per_channel", "--keep_head_fp32", "--reduce_range",
                                                   "--keep_ffn_out_fp32", "--quantization dynamic"]


def test_calibration_sample_is_seeded() -> None:
    texts = [f"t{i}" for i in range(100)]
    assert sample_texts(texts[:5], 10, 0) == texts[:5]
    assert sample_texts(texts, 10, 1) == sample_texts(texts, 10, 1) != sample_texts(texts, 10, 2)
    assert len(set(sample_texts(texts, 10, 1))) == 10


# ----------------------------------------------------------------------------------------------- calibration


def test_calibration_entry_threshold_modes() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 3.0 * np.eye(3)[labels]
    fixed = calibration_entry(logits, labels, CalibrationOptions(temperature=False, threshold_value=0.4))
    assert fixed["temperature"] == 1.0 and fixed["report"] is None
    assert fixed["threshold"] == {"mode": "global", "value": 0.4, "chosen_by": "--threshold_value"}
    assert calibration_entry(logits, labels, CalibrationOptions(threshold="none"))["threshold"] == {"mode": "none"}
    coverage = calibration_entry(logits, labels, CalibrationOptions())
    assert coverage["temperature"] > 0 and coverage["threshold"]["chosen_by"] == {"target_coverage": 0.95}
    assert coverage["threshold"]["validation"]["coverage"] >= 0.95
    per_class = calibration_entry(logits, labels, CalibrationOptions(threshold="per_class", min_class_support=5))
    assert per_class["threshold"]["mode"] == "per_class" and len(per_class["threshold"]["values"]) == 3
    always_wrong = 3.0 * np.eye(3)[(labels + 1) % 3]
    with pytest.raises(ExportError, match="target precision 0.5 is not reachable"):
        calibration_entry(always_wrong, labels, CalibrationOptions(target_precision=0.5))
    both = bundle_calibration({"fp32": logits, "int8": logits}, labels, CalibrationOptions(), "val.jsonl")
    assert both["uncertain_label"] == "uncertain" and both["n"] == 200 and set(both["by_precision"]) == {"fp32", "int8"}


# ----------------------------------------------------------------------------------------------- options


def test_old_flag_spellings_reach_the_jobs() -> None:
    options = parse_options(["--out", "b", "--ckpt_path", "runs/x", "--quantization", "static", "--no-per_channel",
                             "--reduce_range", "--keep_ffn_out_fp32", "--no-keep_head_fp32", "--no-gelu_approximation",
                             "--no_optimize", "--no_cpu_rewrites", "--parity_batch_sizes", "1", "8", "--force",
                             "--no_temperature", "--threshold", "per_class", "--min_agreement", "0.9", "--quiet"])
    q = options.quantization
    assert (q.mode, q.per_channel, q.reduce_range, q.keep_ffn_out_fp32, q.keep_head_fp32, q.gelu_approximation) == (
        "static", False, True, True, False, False)
    assert not options.optimize and not options.cpu_rewrites and options.parity_batch_sizes == (1, 8)
    assert options.force and options.quiet and options.limits == GateLimits(0.9, 0.5)
    assert not options.calibration.temperature and options.calibration.threshold == "per_class"
    assert options.source.ckpt_path == "runs/x" and options.out == Path("b")
    defaults = parse_options(["--out", "b"])
    assert defaults.quantization == QuantizationOptions() and defaults.parity_batch_sizes == (1,)
    assert defaults.optimize and defaults.cpu_rewrites and not defaults.force
    assert parse_options(["--out", "b", "--no-reduce_range"]).quantization.reduce_range is False


def test_compatible_argv(tmp_path: Path) -> None:
    assert compatible_argv(["--text_fields", "title", "body", "--out", "b"]) == ['--text_fields=["title", "body"]',
                                                                               "--out", "b"]
    assert compatible_argv(["--parity_batch_sizes"]) == ["--parity_batch_sizes=[]"]
    assert compatible_argv(["--parity_batch_sizes", "[1, 4]"]) == ["--parity_batch_sizes", "[1, 4]"]
    run_config = tmp_path / "config.yaml"
    run_config.write_text("model: {class_path: a.B}\ndata: {class_path: c.D}\n")
    options_file = tmp_path / "export.yaml"
    options_file.write_text("out: b\nforce: true\n")
    assert compatible_argv(["--config", str(run_config)]) == ["--run_config", str(run_config)]
    assert compatible_argv(["--config", str(options_file)]) == ["--config", str(options_file)]
    from_file = parse_options(["--config", str(options_file), "--quiet"])
    assert from_file.out == Path("b") and from_file.force and from_file.quiet
    assert parse_options(["--config", str(run_config), "--out", "b"]).source.run_config == str(run_config)


def test_check_out(tmp_path: Path) -> None:
    check_out(tmp_path / "new", overwrite=False)
    with pytest.raises(ExportError, match="already exists"):
        check_out(tmp_path, overwrite=False)
    check_out(tmp_path, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        check_out(tmp_path / "file", overwrite=True)
