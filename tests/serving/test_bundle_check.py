"""Bundle validation at load (fenlei.serving.bundle_check): every broken, out-of-range or tampered value is one
BundleError naming the file and field, and ``fenlei infer``/``fenlei serve`` stop on it in one line, exit 2.

The bundles are copies of tests/fixtures/layout_v0/bundle (written by an older commit, no sha256 recorded): as is
it is the "old bundle"; with the sha256 table the export writes now added, it is a current one.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fenlei.serving import predictor as predictor_mod
from fenlei.serving.bundle_check import BundleError, file_hashes, label_config, load_bundle
from fenlei.serving.predictor import BundlePredictor
from tests.conftest import REPO_ROOT, fenlei_user_error, write_jsonl

OLD_BUNDLE = REPO_ROOT / "tests" / "fixtures" / "layout_v0" / "bundle"
TEXTS = ["my refund payment card", "password login locked"]


class New:
    """What a change returns to replace a file's whole content (other changes edit it in place)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    value = json.loads(path.read_text())
    new = change(value)
    path.write_text(json.dumps(new.value if isinstance(new, New) else value))


def _rehash(bundle: Path) -> None:
    _edit_json(bundle / "metadata.json", lambda m: m.__setitem__("sha256", file_hashes(bundle)))


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current bundle: the old fixture plus the sha256 table of its model and tokenizer files, loaded as on the
    kind of CPU it was exported on (VNNI): on one without, its 8-bit weights rightly draw the saturation warning."""
    monkeypatch.setattr(predictor_mod, "cpu_has_vnni", lambda: True)
    out = shutil.copytree(OLD_BUNDLE, tmp_path / "bundle")
    _rehash(out)
    return out


def test_current_bundle_loads_without_warnings(bundle: Path, recwarn: pytest.WarningsRecorder) -> None:
    for precision in ("int8", "fp32"):
        predictor = BundlePredictor(bundle, precision)
        assert predictor.info()["warnings"] == [] and len(predictor.predict(TEXTS)) == 2
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_8bit_bundle_from_a_vnni_cpu_warns_on_one_without(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predictor_mod, "cpu_has_vnni", lambda: False)
    (warning,) = BundlePredictor(bundle, "int8").info()["warnings"]
    assert "passed its parity gate on a CPU with VNNI; this CPU has none" in warning
    assert BundlePredictor(bundle, "fp32").info()["warnings"] == []


def test_old_bundle_without_sha256_loads_with_a_warning(tmp_path: Path) -> None:
    old = shutil.copytree(OLD_BUNDLE, tmp_path / "old")
    with pytest.warns(RuntimeWarning, match="no sha256 recorded for tokenizer.json, model_int8.onnx"):
        predictor = BundlePredictor(old)
    assert any("sha256" in w for w in predictor.info()["warnings"]) and predictor.predict(TEXTS)


def _calibration(field: str, value: Any) -> Callable[[dict], None]:
    def change(c: dict) -> None:
        c["by_precision"]["int8"][field] = value
    return change


def _threshold(**spec: Any) -> Callable[[dict], None]:
    return _calibration("threshold", spec)


def _meta(**fields: Any) -> Callable[[dict], None]:
    return lambda m: m.update(fields)


def _parity(**fields: Any) -> Callable[[dict], None]:
    return lambda m: m["parity"].update(fields)


# (file, change of its JSON, the error's pattern): the cases and their neighbours.
JSON_CASES = [
    ("metadata.json", lambda m: New([m]), r"metadata\.json: must be a JSON object, got list"),
    ("metadata.json", lambda m: m.pop("format"), r"metadata\.json: format: expected 'fenlei-bundle', got None"),
    ("metadata.json", _meta(format="onnx"), r"format: expected 'fenlei-bundle', got 'onnx' \(not a fenlei bundle\)"),
    ("metadata.json", _meta(format="fenlei-bundle-unfinished"), r"format: .* an export that has not finished"),
    ("metadata.json", _meta(format_version=2), r"format_version: 2 is not one this fenlei reads"),
    ("metadata.json", lambda m: m.pop("parity"), r"metadata\.json: parity\.passed: missing"),
    ("metadata.json", _parity(passed="yes"), r"parity\.passed: missing or not true/false"),
    ("metadata.json", _parity(passed=False), r"parity\.passed is false and parity\.forced is not true"),
    ("metadata.json", _meta(max_length="32"), r"metadata\.json: max_length: must be an integer >= 1, got '32'"),
    ("metadata.json", _meta(max_length=0), r"max_length: must be an integer >= 1, got 0"),
    ("metadata.json", _meta(max_length=32.5), r"max_length: must be an integer >= 1, got 32\.5"),
    ("metadata.json", _meta(max_length=True), r"max_length: must be an integer >= 1, got True"),
    ("metadata.json", _meta(pad_token_id=-1), r"pad_token_id: must be an integer >= 0, got -1"),
    ("metadata.json", _meta(text_fields="text"), r"text_fields: must be a non-empty list"),
    ("metadata.json", _meta(labels=5), r"metadata\.json: labels: 5, but labels.json has 4 labels"),
    ("metadata.json", _meta(sha256=["x"]), r"sha256: must be an object"),
    ("metadata.json", lambda m: m["sha256"].pop("model_int8.onnx"), r"sha256\.model_int8\.onnx: missing"),
    ("metadata.json", lambda m: m["sha256"].update({"tokenizer.json": "0" * 64}),
     r"tokenizer\.json: sha256 .* does not match metadata\.json sha256\.tokenizer\.json 0000"),
    ("metadata.json", lambda m: m["optimization"].update(ort_disabled_optimizers="SkipLayerNormFusion"),
     r"optimization\.ort_disabled_optimizers must be a list"),
    ("labels.json", lambda labels: New("abcd"), r"labels\.json: must be a non-empty JSON list of label names, got str"),
    ("labels.json", lambda labels: New([]), r"labels\.json: must be a non-empty JSON list .*\(empty\)"),
    ("labels.json", lambda labels: New([1, 2, 3, 4]), r"labels\.json: \[0\]: label names must be non-empty strings, got 1"),
    ("labels.json", lambda labels: New(["a", "b", "", "d"]), r"labels\.json: \[2\]: label names must be non-empty"),
    ("labels.json", lambda labels: New(["a", "b", "a", "d"]), r"labels\.json: \[2\]: duplicate label 'a' \(also at \[0\]\)"),
    ("calibration.json", lambda c: New([c]), r"calibration\.json: must be a JSON object"),
    ("calibration.json", lambda c: c.pop("by_precision"), r"calibration\.json: by_precision: must be an object"),
    ("calibration.json", lambda c: c["by_precision"].pop("int8"), r"calibration\.json: no entry for precision 'int8'"),
    ("calibration.json", lambda c: c.update(uncertain_label="bug"), r"uncertain_label: 'bug' is also a class"),
    ("calibration.json", lambda c: c.update(uncertain_label=3), r"uncertain_label: must be a non-empty string"),
    ("calibration.json", _calibration("temperature", 0), r"by_precision\.int8\.temperature: must be a finite number > 0, got 0"),
    ("calibration.json", _calibration("temperature", -1.0), r"temperature: must be a finite number > 0, got -1\.0"),
    ("calibration.json", _calibration("temperature", "nan"), r"temperature: must be a finite number > 0, got 'nan'"),
    ("calibration.json", _calibration("temperature", math.nan), r"temperature: must be a finite number > 0, got nan"),
    ("calibration.json", _calibration("temperature", math.inf), r"temperature: must be a finite number > 0, got inf"),
    ("calibration.json", _calibration("temperature", True), r"temperature: must be a finite number > 0, got True"),
    ("calibration.json", lambda c: c["by_precision"]["int8"].pop("temperature"), r"temperature: .* got None"),
    ("calibration.json", lambda c: c["by_precision"]["fp32"].update(temperature=0), r"by_precision\.fp32\.temperature"),
    ("calibration.json", _threshold(mode="global", value="x"), r"int8\.threshold\.value: must be a number in \[0, 1\], got 'x'"),
    ("calibration.json", _threshold(mode="global", value=1.5), r"threshold\.value: must be a number in \[0, 1\], got 1\.5"),
    ("calibration.json", _threshold(mode="global", value=-0.1), r"threshold\.value: .* got -0\.1"),
    ("calibration.json", _threshold(mode="global", value=math.nan), r"threshold\.value: .* got nan"),
    ("calibration.json", _threshold(mode="global"), r"threshold\.value: .* got None"),
    ("calibration.json", _threshold(mode="per_class", values=[0.1, 0.2]), r"threshold\.values: must be a list of 4 thresholds .* got 2"),
    ("calibration.json", _threshold(mode="per_class", values=[0.1, 0.2, 2.0, 0.3]), r"threshold\.values\[2\]: must be a number in \[0, 1\], got 2\.0"),
    ("calibration.json", _threshold(mode="per_class", values=[0.1, "x", 0.2, 0.3]), r"threshold\.values\[1\]: .* got 'x'"),
    ("calibration.json", _threshold(mode="top"), r"threshold\.mode: unknown threshold mode 'top'"),
    ("calibration.json", _calibration("threshold", "global"), r"threshold: must be an object with a mode"),
]


@pytest.mark.parametrize(("name", "change", "message"), JSON_CASES, ids=[f"{c[0]}:{c[2][:40]}" for c in JSON_CASES])
def test_broken_values_are_one_bundle_error(bundle: Path, name: str, change: Callable[[Any], Any], message: str) -> None:
    _edit_json(bundle / name, change)
    with pytest.raises(BundleError, match=message) as raised:
        BundlePredictor(bundle, "int8")
    assert "\n" not in str(raised.value) and name in str(raised.value)


def test_unparsable_files_are_one_bundle_error(bundle: Path) -> None:
    (bundle / "labels.json").write_bytes(b"[\"a\", \xff]")
    with pytest.raises(BundleError, match=r"labels\.json: not UTF-8"):
        BundlePredictor(bundle)
    (bundle / "labels.json").write_text('["a", "b",')
    with pytest.raises(BundleError, match=r"labels\.json:1: malformed JSON"):
        BundlePredictor(bundle)


LABELS = ["billing", "bug", "login", "shipping"]  # the fixture bundle's labels.json


def _config(**fields: Any) -> Callable[[dict], None]:
    return lambda c: c.update(fields)


CONFIG_CASES = [
    (lambda c: New([c]), r"config\.json: must be a JSON object, got list"),
    (_config(id2label={"0": "bug", "1": "billing", "2": "login", "3": "shipping"}),
     r"config\.json: id2label: does not match labels\.json \(4 labels in class-id order\)"),
    (lambda c: c.pop("id2label"), r"config\.json: id2label: does not match labels\.json .* got null"),
    (_config(label2id={"billing": 0, "bug": 1, "login": 2}), r"config\.json: label2id: does not match labels\.json"),
    (_config(num_labels=5), r"config\.json: num_labels: 5, but labels\.json has 4 labels"),
    (_config(num_labels="4"), r"config\.json: num_labels: '4', but labels\.json has 4 labels"),
    (_config(model_type=7), r"config\.json: model_type: must be a non-empty string or null, got 7"),
]


def test_label_config_is_metadata_that_agrees_with_the_labels(bundle: Path) -> None:
    """config.json (Hugging Face label maps) is optional (the fixture, an old bundle, has none), not hashed, and,
    when there, must say what labels.json says."""
    assert not (OLD_BUNDLE / "config.json").exists() and BundlePredictor(bundle).predict(TEXTS)
    (bundle / "config.json").write_text(json.dumps(label_config(LABELS, "bert")))
    assert BundlePredictor(bundle).info()["warnings"] == []  # no sha256 entry needed: it decides no logits
    config = json.loads((bundle / "config.json").read_text())
    assert config == {"model_type": "bert", "num_labels": 4, "id2label": {"0": "billing", "1": "bug", "2": "login",
                      "3": "shipping"}, "label2id": {"billing": 0, "bug": 1, "login": 2, "shipping": 3}}
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(bundle)  # what Hugging Face tools read: the backbone's type and the labels
    assert hf.model_type == "bert" and hf.id2label == dict(enumerate(LABELS))
    assert hf.label2id == {n: i for i, n in enumerate(LABELS)}
    _edit_json(bundle / "config.json", _config(model_type=None))
    assert BundlePredictor(bundle).predict(TEXTS)  # an export source without a model_type


@pytest.mark.parametrize(("change", "message"), CONFIG_CASES, ids=[c[1][:40] for c in CONFIG_CASES])
def test_label_config_that_disagrees_is_one_bundle_error(bundle: Path, change: Callable[[Any], Any],
                                                         message: str) -> None:
    (bundle / "config.json").write_text(json.dumps(label_config(LABELS, "bert")))
    _edit_json(bundle / "config.json", change)
    with pytest.raises(BundleError, match=message) as raised:
        BundlePredictor(bundle, "int8")
    assert "\n" not in str(raised.value)
    (bundle / "config.json").write_text("{")
    with pytest.raises(BundleError, match=r"config\.json:1: malformed JSON"):
        BundlePredictor(bundle)

def test_forced_parity_loads_with_a_warning(bundle: Path) -> None:
    _edit_json(bundle / "metadata.json", _parity(passed=False, forced=True, failures=["ort_int8: agreement 0.97 < 0.99"]))
    with pytest.warns(RuntimeWarning, match=r"parity gate failed at export and was overridden with --force \(ort_int8"):
        predictor = BundlePredictor(bundle)
    assert any("--force" in w for w in predictor.info()["warnings"])


def test_recorded_sha256_mismatch_is_refused(bundle: Path) -> None:
    with (bundle / "model_int8.onnx").open("ab") as handle:
        handle.write(b"\0")  # one byte more: onnxruntime might still load it, the hash does not
    with pytest.raises(BundleError, match=r"model_int8\.onnx: sha256 .* does not match metadata\.json sha256\.model_int8"):
        BundlePredictor(bundle, "int8")
    assert BundlePredictor(bundle, "fp32").predict(TEXTS)  # the other model is intact and still serves


def test_files_must_lie_inside_the_bundle(bundle: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("tokenizer.json", "model_int8.onnx", "labels.json"):
        copy = shutil.copytree(bundle, tmp_path / f"b_{name}")
        shutil.move(copy / name, elsewhere / name)
        (copy / name).symlink_to(elsewhere / name)  # same bytes, same sha256: only the location is wrong
        with pytest.raises(BundleError, match=rf"{name}: points outside the bundle"):
            BundlePredictor(copy)
        (elsewhere / name).unlink()
    inner = shutil.copytree(bundle, tmp_path / "inner")
    shutil.move(inner / "tokenizer.json", inner / "tok.json")
    (inner / "tokenizer.json").symlink_to("tok.json")  # a link within the bundle is fine
    assert BundlePredictor(inner).predict(TEXTS)
    (inner / "model_int8.onnx").unlink()
    (inner / "model_int8.onnx").mkdir()
    with pytest.raises(BundleError, match=r"model_int8\.onnx: not a regular file"):
        BundlePredictor(inner)


def test_unreadable_tokenizer_and_model_are_bundle_errors(bundle: Path) -> None:
    (bundle / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    _rehash(bundle)
    with pytest.raises(BundleError, match=r"tokenizer\.json: not a tokenizers file"):
        BundlePredictor(bundle)
    shutil.copyfile(OLD_BUNDLE / "tokenizer.json", bundle / "tokenizer.json")
    (bundle / "model_int8.onnx").write_bytes(b"not a protobuf")
    _rehash(bundle)
    with pytest.raises(BundleError, match=r"model_int8\.onnx: onnxruntime cannot load it"):
        BundlePredictor(bundle)


def test_static_output_size_must_match_the_labels(bundle: Path) -> None:
    _edit_json(bundle / "labels.json", lambda labels: New([*labels, "extra"]))
    _edit_json(bundle / "metadata.json", _meta(labels=5))
    with pytest.raises(BundleError, match=r"model_int8\.onnx: 4 outputs but labels\.json has 5 labels"):
        BundlePredictor(bundle)


def test_dynamic_output_size_is_checked_on_the_first_run(bundle: Path) -> None:
    """A graph whose class axis is symbolic: its logits' width is checked on what it returns."""
    import onnx
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "classes"])
    node = helper.make_node("Cast", ["attention_mask"], ["logits"], to=TensorProto.FLOAT)  # width = tokens
    graph = helper.make_graph([node], "dynamic_classes", [ids, mask], [logits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(bundle / "model_fp32.onnx"))
    _rehash(bundle)
    predictor = BundlePredictor(bundle, "fp32")  # nothing to check in the graph: loads
    widths = {len(predictor.tokenizer.encode(t).ids) for t in ["refund", "my refund payment card please now"]}
    assert 4 not in widths
    with pytest.raises(BundleError, match=r"model_fp32\.onnx: the model returns logits of shape \[1, \d+\], but "
                                          r"labels\.json has 4 labels"):
        predictor.predict(["my refund payment card please now"])


def test_temporary_and_unfinished_folders_are_not_bundles(bundle: Path, tmp_path: Path) -> None:
    """A killed export leaves a hidden .NAME.tmp-* folder (complete or not): never accepted, except by the export
    itself while it builds (building=True)."""
    temporary = shutil.copytree(bundle, tmp_path / ".bundle.tmp-k9x2")
    with pytest.raises(BundleError, match=r"\.bundle\.tmp-k9x2: a temporary folder of an export that did not finish"):
        BundlePredictor(temporary)
    assert load_bundle(temporary, "int8", building=True).label_names
    stub = shutil.copytree(bundle, tmp_path / "stub")
    _edit_json(stub / "metadata.json", lambda m: New({"format": "fenlei-bundle-unfinished", "max_length": 32}))
    with pytest.raises(BundleError, match="an export that has not finished"):
        BundlePredictor(stub)
    building = load_bundle(stub, "fp32", building=True)  # the export's own parity gate: no parity, no sha256 yet
    assert building.warnings == [] and building.max_length == 32


def test_infer_and_serve_stop_on_a_bad_bundle_in_one_line(bundle: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _edit_json(bundle / "calibration.json", _calibration("temperature", 0))
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": 0, "text": "refund"}])
    line = fenlei_user_error(["infer", "--bundle", str(bundle), "--input", str(data), "--output",
                              str(tmp_path / "out.jsonl")], capsys)
    assert "calibration.json: by_precision.int8.temperature: must be a finite number > 0, got 0" in line
    assert not (tmp_path / "out.jsonl").exists()
    line = fenlei_user_error(["serve", "--bundle", str(bundle), "--port", "1"], capsys)
    assert "temperature: must be a finite number > 0" in line
    temporary = shutil.copytree(OLD_BUNDLE, tmp_path / ".b.tmp-1234")
    line = fenlei_user_error(["infer", "--bundle", str(temporary), "--input", str(data), "--output",
                              str(tmp_path / "out.jsonl")], capsys)
    assert "a temporary folder of an export that did not finish" in line
