"""BundlePredictor: calibration stored and used, abstention, output format; infer/serve never import torch."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fenlei.serving.predictor import BundleError, BundlePredictor, softmax
from tests.conftest import write_jsonl
from tests.deploy_support import copy_bundle, tiny_bundle
from tests.torch_free import run_torch_free, torch_free_cli

TEXTS = ["refund my card please", "the courier is late again", "screen freeze crash", "password reset help"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_data: Path) -> Path:
    return tiny_bundle(tmp_path_factory, tiny_model, tiny_data)


def _set_calibration(bundle: Path, precision: str, **entry: object) -> None:
    path = bundle / "calibration.json"
    calibration = json.loads(path.read_text())
    calibration["by_precision"][precision].update(entry)
    path.write_text(json.dumps(calibration))


def test_calibration_is_stored_and_used(bundle: Path, tmp_path: Path) -> None:
    calibration = json.loads((bundle / "calibration.json").read_text())
    entry = calibration["by_precision"]["int8"]
    report = entry["report"]
    assert report["nll_after"] <= report["nll_before"] and report["ece_after"] <= report["ece_before"] + 1e-9
    assert entry["threshold"]["mode"] == "global" and entry["threshold"]["chosen_by"] == {"target_coverage": 0.95}
    predictor = BundlePredictor(bundle)
    assert predictor.temperature == pytest.approx(entry["temperature"]) and predictor.temperature != 1.0
    logits = predictor.predict_logits(TEXTS)
    np.testing.assert_allclose(predictor.predict_proba(TEXTS), softmax(logits, entry["temperature"]), atol=1e-6)

    # Changing calibration.json changes the served confidences and the abstention.
    copy = copy_bundle(bundle, tmp_path / "b")
    _set_calibration(copy, "int8", temperature=2 * entry["temperature"], threshold={"mode": "global", "value": 0.999})
    other = BundlePredictor(copy)
    predictions = other.predict(TEXTS, top_k=2)
    assert all(p["uncertain"] and p["label"] == "uncertain" for p in predictions)
    assert [p["predicted_label"] for p in predictions] == [predictor.label_names[i] for i in logits.argmax(1)]
    assert [p["confidence"] for p in predictions] == pytest.approx(softmax(logits, 2 * entry["temperature"]).max(1))
    _set_calibration(copy, "int8", threshold={"mode": "per_class", "values": [0.0, 0.0, 1.0, 0.0]})
    for p in BundlePredictor(copy).predict(TEXTS):
        assert p["uncertain"] == (p["predicted_label"] == "login")


def test_prediction_format(bundle: Path) -> None:
    predictor = BundlePredictor(bundle, precision="fp32", intra_op_threads=1)
    assert predictor.label_names == ["billing", "bug", "login", "shipping"]
    predictions = predictor.predict(TEXTS + ["x " * 500], top_k=3, batch_size=2)  # long text: truncated, not an error
    assert len(predictions) == 5
    for p in predictions:
        assert set(p) == {"label", "predicted_label", "confidence", "uncertain", "top_k"}
        scores = [t["score"] for t in p["top_k"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert p["predicted_label"] == p["top_k"][0]["label"] and p["confidence"] == scores[0]
    assert [p["predicted_label"] for p in predictions[:4]] == ["billing", "shipping", "bug", "login"]
    probs = predictor.predict_proba(TEXTS, batch_size=3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    assert predictor.predict([]) == []


def test_broken_bundles_are_clear_errors(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such bundle"):
        BundlePredictor(tmp_path / "nothing")
    copy = copy_bundle(bundle, tmp_path / "b")
    (copy / "model_int8.onnx").unlink()
    with pytest.raises(BundleError, match="model_int8.onnx: missing"):
        BundlePredictor(copy)
    with pytest.raises(BundleError, match="precision"):
        BundlePredictor(copy, precision="fp16")


def test_infer_runs_without_torch(bundle: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(TEXTS)])
    out = tmp_path / "out.jsonl"
    run_torch_free(["infer", "--bundle", str(bundle), "--input", str(data), "--output", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2, 3] and rows[0]["predicted_label"] == "billing"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_starts_fast_without_torch(bundle: Path) -> None:
    import httpx

    port = _free_port()
    code = torch_free_cli(["serve", "--bundle", str(bundle), "--port", str(port), "--log_level", "warning"])
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = None
        while time.perf_counter() - started < 60 and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    ready = time.perf_counter() - started
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        assert ready is not None, proc.stderr.read() if proc.poll() is not None else "no /health within 60 s"
        # The target is < 2 s on an idle machine; a loaded test machine gets slack, a torch import would not fit.
        assert ready < 8, f"service took {ready:.1f} s to answer /health"
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": TEXTS[:2]}, timeout=10)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cpu_vnni_detection(tmp_path: Path) -> None:
    from fenlei.serving.predictor import cpu_has_vnni

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx2 fma\n")
    assert cpu_has_vnni(info) is False
    info.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert cpu_has_vnni(info) is True
    info.write_text("model name\t: something without flags\n")
    assert cpu_has_vnni(info) is None
    assert cpu_has_vnni(tmp_path / "missing") is None


def test_saturation_warning_for_8bit_bundle_moved_off_vnni(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           bundle: Path) -> None:
    """A bundle whose 8-bit INT8 model passed its gate on a VNNI CPU warns when loaded on a CPU without VNNI
    (and only then); 7-bit weights, an fp32 session, or a same-kind CPU give no warning."""
    from fenlei.serving import predictor as predictor_module
    from fenlei.serving.predictor import saturation_warning

    meta = json.loads((bundle / "metadata.json").read_text())
    assert "vnni" in meta["export_cpu"]
    risky = {"quantization": {"mode": "dynamic", "weight_type": "QInt8", "reduce_range": False},
             "export_cpu": {"vnni": True}}
    assert "--reduce_range" in saturation_warning(risky, here_vnni=False)
    assert saturation_warning(risky, here_vnni=True) is None and saturation_warning(risky, here_vnni=None) is None
    assert saturation_warning({**risky, "quantization": {**risky["quantization"], "reduce_range": True}}, False) is None
    assert saturation_warning({**risky, "export_cpu": {"vnni": False}}, False) is None
    assert saturation_warning({"quantization": risky["quantization"]}, False) is None  # older bundles: unknown
    assert saturation_warning({**risky, "export_cpu": "vnni"}, False) is None  # malformed: unknown, no crash
    assert saturation_warning({**risky, "quantization": ["dynamic"]}, False) is None

    moved = tmp_path / "moved"
    shutil.copytree(bundle, moved)
    meta["quantization"].update(reduce_range=False, weight_type="QInt8", mode="dynamic")
    meta["export_cpu"] = {"vnni": True}
    (moved / "metadata.json").write_text(json.dumps(meta))
    monkeypatch.setattr(predictor_module, "cpu_has_vnni", lambda: False)
    with pytest.warns(RuntimeWarning, match="u8s8 products can saturate"):
        loaded = BundlePredictor(moved, "int8")
    assert loaded.info()["warnings"] and BundlePredictor(moved, "fp32").info()["warnings"] == []
