"""Export: round trip torch -> ONNX bundle, the parity gate, atomic writes (fenlei.deploy.export)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fenlei.deploy import onnx_tools
from fenlei.deploy.export import ExportError, export, main
from fenlei.serving.predictor import BUNDLE_FILES, BundlePredictor
from tests.deploy_support import export_args, tiny_bundle, tiny_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_data: Path) -> Path:
    return tiny_run(tmp_path_factory, tiny_model, tiny_data)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_data: Path) -> Path:
    return tiny_bundle(tmp_path_factory, tiny_model, tiny_data)


def _fenlei_export(argv: list[str]) -> int:
    """Exit status of ``fenlei export ARGV`` (user errors reported in one line by fenlei.commands)."""
    from fenlei.commands import main as fenlei_main

    with pytest.raises(SystemExit) as exit_info:
        fenlei_main(["export", *argv])
    return int(exit_info.value.code)


def _texts(tiny_data: Path, split: str) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (tiny_data / f"{split}.jsonl").read_text().splitlines()]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _torch_logits(run_dir: Path, tiny_model: Path, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoTokenizer

    from lightning_modules import EncoderClassifier

    summary = json.loads((run_dir / "run_summary.json").read_text())
    model = EncoderClassifier.load_from_checkpoint(summary["best_checkpoint"], map_location="cpu").eval()
    enc = AutoTokenizer.from_pretrained(tiny_model)(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(enc["input_ids"], enc["attention_mask"]).numpy()


def test_round_trip_logits_match_torch(bundle: Path, run_dir: Path, tiny_model: Path, tiny_data: Path) -> None:
    for name in BUNDLE_FILES:
        assert (bundle / name).is_file(), name
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["parity"]["passed"] and not meta["parity"]["forced"]
    assert meta["parity"]["tokenizer_mismatches"] == 0
    assert meta["source"]["checkpoint"].endswith(".ckpt") and meta["max_length"] == 32
    assert meta["optimization"]["fused_ops"].get("Attention") == 2  # the two BERT layers were fused
    assert {"torch", "onnxruntime", "onnx"} <= set(meta["versions"])
    # Default INT8: dynamic, per-channel, 8-bit weights first (7-bit only if that fails the gate; docs/deployment.md).
    assert (meta["quantization"]["mode"], meta["quantization"]["per_channel"], meta["quantization"]["reduce_range"]) == (
        "dynamic", True, False)
    assert [{k: a[k] for k in ("reduce_range", "keep_ffn_out_fp32", "passed", "failures")}
            for a in meta["quantization"]["attempts"]] == [
        {"reduce_range": False, "keep_ffn_out_fp32": False, "passed": True, "failures": []}]
    assert meta["quantization"]["attempts"][0]["size_mb"] > 0 and not meta["quantization"]["keep_ffn_out_fp32"]
    # The head (once per text) stays fp32 and the INT8 graph's two GELUs use the tanh form.
    assert meta["quantization"]["keep_head_fp32"] and meta["quantization"]["nodes_excluded"] == ["/inner/head/head.1/Gemm"]
    assert meta["quantization"]["gelu_approximated"] == 2
    import onnx

    head = [n for n in onnx.load(str(bundle / "model_int8.onnx")).graph.node if n.name.startswith("/inner/head/head.1/Gemm")]
    assert head and {n.op_type for n in head} <= {"Gemm", "MatMul", "Add"}  # not MatMulInteger: really left in fp32
    assert json.loads((bundle / "labels.json").read_text()) == ["billing", "bug", "login", "shipping"]
    assert json.loads((bundle / "config.json").read_text()) == {  # the labels as Hugging Face tools read them
        "model_type": "bert", "num_labels": 4, "id2label": {"0": "billing", "1": "bug", "2": "login", "3": "shipping"},
        "label2id": {"billing": 0, "bug": 1, "login": 2, "shipping": 3}}
    assert "config.json" in meta["sizes_bytes"] and "config.json" not in meta["sha256"]  # metadata, not a model file

    texts, labels = _texts(tiny_data, "test")
    reference = _torch_logits(run_dir, tiny_model, texts)
    fp32 = BundlePredictor(bundle, "fp32").predict_logits(texts, batch_size=5)  # odd batch: dynamic batch axis
    np.testing.assert_allclose(fp32, reference, atol=1e-4, rtol=1e-4)
    int8 = BundlePredictor(bundle, "int8").predict_logits(texts, batch_size=1)
    assert (int8.argmax(1) == reference.argmax(1)).mean() >= 0.9
    # The model learnt something, so agreement above is not agreement on noise.
    names = json.loads((bundle / "labels.json").read_text())
    assert np.mean([names[i] == y for i, y in zip(reference.argmax(1), labels, strict=True)]) >= 0.75


def _break_head(src: Path, dst: Path, *args: object) -> None:
    """A 'quantizer' that writes a corrupted model: class 0's bias +50, so INT8 predicts class 0 everywhere."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    head = next(n for n in model.graph.node if n.name in onnx_tools.head_nodes(src))
    bias_name = head.input[2] if head.op_type == "Gemm" else None
    for init in model.graph.initializer:
        if init.name == bias_name:
            bias = numpy_helper.to_array(init).copy()
            bias[0] += 50.0
            init.CopyFrom(numpy_helper.from_array(bias, init.name))
    onnx.save(model, str(dst))


def test_parity_gate_fails_and_leaves_nothing(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(onnx_tools, "quantize_dynamic_int8", _break_head)
    out = tmp_path / "bundles" / "b"
    assert _fenlei_export(["--quiet", "--ckpt_path", str(run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("fenlei: error: parity gate failed")  # one line, exit 2
    assert "parity gate failed" in err and "ort_int8: argmax agreement with torch fp32" in err and "macro-F1 change" in err
    assert not out.exists() and list(out.parent.iterdir()) == []  # no bundle, no temp folder

    # --force ships it anyway, and says so in the metadata.
    export(export_args("--ckpt_path", str(run_dir), "--out", str(out), "--force"))
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["parity"]["forced"] and not meta["parity"]["passed"]
    assert meta["parity"]["engines"]["ort_fp32"]["agreement_vs_torch"] == 1.0
    # It ships the attempt closest to the gate (all equally broken here: the first), not the last one made, and
    # leaves none of the set-aside attempts behind.
    shipped = meta["quantization"]["shipped_attempt"]
    assert shipped == 1 and len(meta["quantization"]["attempts"]) > 1
    assert meta["quantization"]["attempts"][shipped - 1]["size_mb"] == round((out / "model_int8.onnx").stat().st_size / 1e6, 2)
    assert not [p.name for p in out.iterdir() if ".attempt" in p.name]


def test_failed_gate_retries_with_seven_bit_weights(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default reduce_range: an 8-bit model that fails the gate is replaced by a 7-bit one; both attempts recorded."""
    real = onnx_tools.quantize_dynamic_int8
    calls: list[bool] = []

    def broken_at_full_range(src: Path, dst: Path, per_channel: bool, reduce_range: bool, *rest: object) -> None:
        calls.append(reduce_range)
        (real if reduce_range else _break_head)(src, dst, per_channel, reduce_range, *rest)

    monkeypatch.setattr(onnx_tools, "quantize_dynamic_int8", broken_at_full_range)
    out = tmp_path / "b"
    meta = export(export_args("--ckpt_path", str(run_dir), "--out", str(out)))
    assert calls == [False, True]
    attempts = meta["quantization"]["attempts"]
    assert [(a["reduce_range"], a["passed"]) for a in attempts] == [(False, False), (True, True)]
    assert any("argmax agreement" in f for f in attempts[0]["failures"])
    assert meta["quantization"]["reduce_range"] is True and meta["parity"]["passed"]
    # An explicit choice is a single attempt: the broken 8-bit model fails the export.
    calls.clear()
    with pytest.raises(ExportError, match="parity gate failed"):
        export(export_args("--ckpt_path", str(run_dir), "--out", str(tmp_path / "c"), "--no-reduce_range"))
    assert calls == [False]


def test_all_int8_failing_falls_back_to_fp32_ffn_outputs(run_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Both all-INT8 attempts fail the gate: the third keeps the FFN output projections in fp32 and is shipped,
    with every attempt (and its size) in the metadata; the INT8 graph really has those products in fp32."""
    real = onnx_tools.quantize_dynamic_int8
    calls: list[tuple[bool, int]] = []

    def broken_unless_ffn_kept(src: Path, dst: Path, per_channel: bool, reduce_range: bool, exclude: list[str],
                               *rest: object) -> None:
        keeps_ffn = bool(set(onnx_tools.ffn_output_nodes(src)) & set(exclude))
        calls.append((reduce_range, keeps_ffn))
        (real if keeps_ffn else _break_head)(src, dst, per_channel, reduce_range, exclude, *rest)

    monkeypatch.setattr(onnx_tools, "quantize_dynamic_int8", broken_unless_ffn_kept)
    out = tmp_path / "b"
    # Without the weight-only attempt (its own test below), which would pass here: it quantizes no MatMul dynamically.
    meta = export(export_args("--ckpt_path", str(run_dir), "--out", str(out), "--no-weight_only_matmuls"))
    assert calls == [(False, False), (True, False), (True, True)]
    quant = meta["quantization"]
    assert [(a["reduce_range"], a["keep_ffn_out_fp32"], a["passed"]) for a in quant["attempts"]] == [
        (False, False, False), (True, False, False), (True, True, True)]
    assert quant["keep_ffn_out_fp32"] and meta["parity"]["passed"]
    ffn = onnx_tools.ffn_output_nodes(out / "model_fp32.onnx")
    assert len(ffn) == 2 and set(ffn) <= set(quant["nodes_excluded"])  # one per layer of the tiny BERT
    import onnx

    int8_nodes = {n.name: n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node}
    assert all(int8_nodes.get(name) == "MatMul" for name in ffn)
    assert quant["attempts"][2]["size_mb"] == round((out / "model_int8.onnx").stat().st_size / 1e6, 2)
    # --no-keep_ffn_out_fp32: two attempts only, and the export fails naming the flag to try.
    calls.clear()
    with pytest.raises(ExportError, match="--keep_ffn_out_fp32"):
        export(export_args("--ckpt_path", str(run_dir), "--out", str(tmp_path / "c"), "--no-keep_ffn_out_fp32",
                           "--no-weight_only_matmuls"))
    assert calls == [(False, False), (True, False)]


def test_weight_only_attempt_ships_matmulnbits_when_the_int8_matmuls_fail(run_dir: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The dynamic INT8 MatMuls fail the gate (broken here): the third attempt writes every MatMul as an 8-bit
    weight-only MatMulNBits, passes, is recorded, and the bundle serves the fp32 graph's answers."""
    real = onnx_tools.quantize_dynamic_int8
    calls: list[tuple[bool, bool]] = []

    def broken_unless_matmuls_kept(src: Path, dst: Path, per_channel: bool, reduce_range: bool, exclude: list[str],
                                   *rest: object) -> None:
        matmuls = {n.name for n in onnx_tools.graph_nodes(src) if n.op_type == "MatMul"}
        keeps_all = matmuls <= set(exclude)
        calls.append((reduce_range, keeps_all))
        (real if keeps_all else _break_head)(src, dst, per_channel, reduce_range, exclude, *rest)

    monkeypatch.setattr(onnx_tools, "quantize_dynamic_int8", broken_unless_matmuls_kept)
    out = tmp_path / "b"
    meta = export(export_args("--ckpt_path", str(run_dir), "--out", str(out)))
    assert calls == [(False, False), (True, False), (False, True)]
    quant = meta["quantization"]
    assert [(a["weight_only"], a["passed"]) for a in quant["attempts"]] == [(False, False), (False, False),
                                                                            (True, True)]
    assert quant["weight_only"] and meta["parity"]["passed"]
    import onnx

    ops = [n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node]
    assert "MatMul" not in ops and ops.count("MatMulNBits") == quant["matmul_nbits"]["nodes"] > 0
    assert quant["matmul_nbits"]["bits"] == 8 and quant["matmul_nbits"]["block_size"] == 32
    from fenlei.serving.predictor import BundlePredictor

    texts = ["the first text", "a second, longer text than the first one", "x"]
    fp32 = BundlePredictor(out, "fp32", 1).predict_logits(texts, 2)
    int8 = BundlePredictor(out, "int8", 1).predict_logits(texts, 2)
    np.testing.assert_array_equal(int8.argmax(1), fp32.argmax(1))


@pytest.mark.parametrize(("argv", "expected"), [
    ([], [(False, False, False, False), (True, False, False, False), (False, False, True, False),
          (False, False, True, True), (True, True, False, False)]),
    (["--keep_ffn_out_fp32"], [(False, True, False, False), (True, True, False, False), (False, True, True, False),
                               (False, True, True, True)]),
    (["--reduce_range"], [(True, False, False, False)]),
    (["--no-reduce_range", "--keep_ffn_out_fp32"], [(False, True, False, False)]),
    (["--weight_only_matmuls"], [(False, False, True, False)]),
    (["--fp32_attention"], [(False, False, True, True)]),
    (["--no-fp32_attention"], [(False, False, False, False), (True, False, False, False), (False, False, True, False),
                               (True, True, False, False)]),
    (["--quantization", "static"], [(False, False, False, False)]),
])
def test_quantization_attempts(argv: list[str], expected: list[tuple[bool, bool]]) -> None:
    from fenlei.deploy.export import quantization_attempts

    assert quantization_attempts(export_args("--out", "x", *argv).quantization) == expected


def test_gate_limits_are_configurable(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"agreement with torch fp32 1\.0000 < 1\.01"):
        export(export_args("--ckpt_path", str(run_dir), "--out", str(tmp_path / "b"), "--min_agreement", "1.01"))


def test_injected_failure_keeps_previous_bundle(bundle: Path, run_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import fenlei.deploy.calibration_step as calibration_step

    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(calibration_step, "calibration_entry", boom)  # fails after both ONNX files are written
    with pytest.raises(RuntimeError, match="injected"):
        export(export_args("--ckpt_path", str(run_dir), "--out", str(out), "--overwrite"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    with pytest.raises(ExportError, match="already exists"):
        export(export_args("--ckpt_path", str(run_dir), "--out", str(out)))


def test_static_qdq_with_fp32_head_and_per_class_thresholds(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "static"
    meta = export(export_args("--ckpt_path", str(run_dir), "--out", str(out), "--quantization", "static",
                              "--per_channel", "--keep_head_fp32", "--threshold", "per_class",
                              "--target_precision", "0.8", "--min_class_support", "2"))
    assert meta["quantization"]["format"] == "QDQ" and meta["quantization"]["nodes_excluded"] == ["/inner/head/head.1/Gemm"]
    assert meta["quantization"]["reduce_range"] is False  # static S8S8 keeps the full range unless asked
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    threshold = json.loads((out / "calibration.json").read_text())["by_precision"]["int8"]["threshold"]
    assert threshold["mode"] == "per_class" and len(threshold["values"]) == 4


def test_bad_source_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _fenlei_export(["--ckpt_path", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err  # one line, naming the flag and the reason
    assert "fenlei: error: --ckpt_path " in err and "no such checkpoint file or run directory" in err
    assert _fenlei_export(["--out", str(tmp_path / "b")]) == 2
    assert "fenlei: error: give exactly one of --ckpt_path and --hf_model" in capsys.readouterr().err
    with pytest.raises(ExportError, match="exactly one"):  # export's main reports nothing itself: it propagates
        main(["--out", str(tmp_path / "b")])


def test_hf_decoder_sequence_classifier(tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    """A decoder (tiny Llama) AutoModelForSequenceClassification folder, as a merged LoRA model would be saved."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    labels = ["billing", "bug", "login", "shipping"]
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, num_labels=4,
                         pad_token_id=tokenizer.pad_token_id, id2label=dict(enumerate(labels)),
                         label2id={name: i for i, name in enumerate(labels)})
    folder = tmp_path / "hf_llama"
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path / "bundle"
    meta = export(export_args("--hf_model", str(folder), "--data_dir", str(tiny_data), "--max_length", "32", "--out", str(out)))
    assert meta["source"]["architectures"] == ["LlamaForSequenceClassification"]
    assert meta["parity"]["engines"]["ort_fp32"]["max_abs_logit_diff"] < 1e-4
    assert meta["parity"]["engines"]["ort_int8"]["agreement_vs_torch"] >= 0.99
    predictions = BundlePredictor(out).predict(["refund my card", "courier late again today"], top_k=2)
    assert len(predictions) == 2 and predictions[0]["predicted_label"] in labels
    # A decoder's FFN outputs are its mlp/down_proj products: --keep_ffn_out_fp32 leaves exactly those in fp32.
    kept = tmp_path / "kept"
    meta = export(export_args("--hf_model", str(folder), "--data_dir", str(tiny_data), "--max_length", "32",
                              "--out", str(kept), "--keep_ffn_out_fp32"))
    down = onnx_tools.ffn_output_nodes(kept / "model_fp32.onnx")
    assert len(down) == 2 and all("/mlp/down_proj/" in name for name in down)  # one per layer of the tiny Llama
    import onnx

    int8_nodes = {n.name: n.op_type for n in onnx.load(str(kept / "model_int8.onnx")).graph.node}
    assert all(int8_nodes.get(name) == "MatMul" for name in down) and meta["quantization"]["keep_ffn_out_fp32"]
    assert "MatMulInteger" in set(int8_nodes.values())  # the rest is still INT8


def test_mpnet_encoder_classifier(tiny_data: Path, tmp_path: Path) -> None:
    """An EncoderClassifier on MPNet (relative position bias in every attention layer): the bundle matches torch,
    and its metadata says truthfully which fusions applied (onnxruntime's BERT attention fusion does not match
    MPNet's extra bias Add, so there is no fused Attention; LayerNorm and GELU are still fused)."""
    import torch
    from transformers import BertTokenizerFast, MPNetConfig, MPNetModel

    from fenlei.training.cli import run_lightning_cli
    from tests.conftest import REPO_ROOT, make_vocab, tiny_overrides

    folder = tmp_path / "tiny_mpnet"
    vocab = make_vocab()
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    MPNetModel(MPNetConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=130, pad_token_id=0)).save_pretrained(folder)
    run = tmp_path / "run"
    run_lightning_cli(args=["fit", "--config", str(REPO_ROOT / "configs" / "quickstart.yaml"),
                            *tiny_overrides(folder, tiny_data, run), "--trainer.max_epochs=4",
                            "--trainer.precision=32-true", "--model.init_args.lr=3e-3", "--model.init_args.head_lr=1e-2"])
    out = tmp_path / "bundle"
    meta = export(export_args("--ckpt_path", str(run), "--out", str(out)))
    fused = meta["optimization"]["fused_ops"]
    assert "Attention" not in fused and fused.get("LayerNormalization", 0) >= 4
    assert meta["parity"]["passed"] and meta["parity"]["engines"]["ort_fp32"]["max_abs_logit_diff"] < 1e-4

    texts, _ = _texts(tiny_data, "test")
    reference = _torch_logits(run, folder, texts)
    np.testing.assert_allclose(BundlePredictor(out, "fp32").predict_logits(texts, batch_size=3), reference,
                               atol=1e-4, rtol=1e-4)
    int8 = BundlePredictor(out, "int8").predict_logits(texts, batch_size=1)
    assert (int8.argmax(1) == reference.argmax(1)).mean() >= 0.9
