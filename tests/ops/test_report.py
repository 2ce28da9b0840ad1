"""``fenlei report``: the per-row files ``test`` and ``validate`` write, the page of a tiny real run (sections,
embedded images, the misclassified rows, the temperature), escaping, missing pieces stated on the page, the
comparison page, one-line errors, and the analysis maths on hand-made arrays."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from fenlei.calibration import expected_calibration_error, fit_temperature
from fenlei.numerics import softmax
from fenlei.ops.report_analysis import confused_pairs, misclassified, reliability_bins
from tests.conftest import fenlei_user_error
from tests.ops.conftest import copy_run, main_status, read_rows

PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Sections (by id), images, tables (rows of cell texts per section) and scripts of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.images: list[dict[str, str]] = []
        self.scripts = 0
        self.links: list[str] = []
        self._section: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self._section = a["id"]
            self.sections[self._section] = {"rows": [], "images": 0, "notes": 0}
        elif tag == "img":
            self.images.append(a)
            if self._section:
                self.sections[self._section]["images"] += 1
        elif tag == "script":
            self.scripts += 1
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "p" and a.get("class") == "note" and self._section:
            self.sections[self._section]["notes"] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._section:
            self.sections[self._section]["rows"].append(self._row)
            self._row = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def test_test_and_validate_write_one_row_per_split_row(tested_run: Path, tiny_data: Path) -> None:
    labels = json.loads((tested_run / "labels.json").read_text())
    for folder, split in (("test", "test"), ("validate", "validation")):
        rows = read_rows(tested_run / folder / "predictions.jsonl")
        source = read_rows(tiny_data / f"{split}.jsonl")
        assert [r["row"] for r in rows] == list(range(len(source))) == [r["line"] - 1 for r in rows]
        assert [r["text"] for r in rows] == [s["text"] for s in source]
        assert [r["gold"] for r in rows] == [s["label"] for s in source]
        for r in rows:
            probs = softmax(np.asarray([r["logits"]]))[0]
            assert r["predicted_label"] == labels[int(probs.argmax())]
            assert abs(r["confidence"] - probs.max()) < 1e-3
    # The per-row file agrees with the logged test accuracy.
    rows = read_rows(tested_run / "test" / "predictions.jsonl")
    accuracy = np.mean([r["gold"] == r["predicted_label"] for r in rows])
    assert abs(accuracy - json.loads((tested_run / "test" / "metrics.json").read_text())["test/acc"]) < 1e-6


def test_report_page_of_a_tested_run(tested_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_status(["report", str(tested_run), "--pairs", "12"]) == 0  # 4 labels: at most 12 pairs
    page = Page((tested_run / "report.html").read_text(encoding="utf-8"))
    assert page.scripts == 0  # a static page
    assert set(page.sections) == {"summary", "curves", "calibration", "confusion", "per-class", "pairs", "errors"}
    # Every image is an embedded PNG: learning curves, the reliability diagram, the confusion matrix.
    assert {name: s["images"] for name, s in page.sections.items() if s["images"]} == {
        "curves": 1, "calibration": 1, "confusion": 1}
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == PNG
    # Nothing is missing in a fit + test + validate run.
    assert sum(s["notes"] for s in page.sections.values()) == 0, page.sections

    rows = read_rows(tested_run / "test" / "predictions.jsonl")
    wrong = [r for r in rows if r["gold"] != r["predicted_label"]]
    errors = page.sections["errors"]["rows"]
    assert errors[0] == ["line", "text", "gold", "predicted", "confidence", "p(gold)"]
    assert len(errors) - 1 == len(wrong)
    assert sorted(int(r[0]) for r in errors[1:]) == sorted(r["line"] for r in wrong)
    confidences = [float(r[4]) for r in errors[1:]]
    assert confidences == sorted(confidences, reverse=True)
    # Confused pairs count every error once when all pairs fit on the page.
    pairs = page.sections["pairs"]["rows"][1:]
    assert sum(int(p[2]) for p in pairs) == len(wrong) if wrong else pairs == []

    # The temperature on the page is the one fitted on the validation rows' logits.
    validation = read_rows(tested_run / "validate" / "predictions.jsonl")
    labels = json.loads((tested_run / "labels.json").read_text())
    t = fit_temperature(np.asarray([r["logits"] for r in validation]),
                        np.asarray([labels.index(r["gold"]) for r in validation]))
    assert f"Temperature {t:.4f}: fitted on 16 validation rows" in "".join(page.text)
    # The ECE before scaling is the test rows' ECE at T = 1.
    logits = np.asarray([r["logits"] for r in rows])
    gold = np.asarray([labels.index(r["gold"]) for r in rows])
    ece_row = next(r for r in page.sections["calibration"]["rows"] if r[0].startswith("ECE"))
    assert abs(float(ece_row[1]) - expected_calibration_error(softmax(logits), gold)) < 1e-4
    assert abs(float(ece_row[2]) - expected_calibration_error(softmax(logits, t), gold)) < 1e-4


def test_texts_are_escaped(tested_run: Path, tmp_path: Path) -> None:
    run = copy_run(tested_run, tmp_path / "run")
    rows = read_rows(run / "test" / "predictions.jsonl")
    labels = json.loads((run / "labels.json").read_text())
    # Row 0 made wrong for sure (all its score on another label), with a text full of markup.
    other = next(i for i, name in enumerate(labels) if name != rows[0]["gold"])
    rows[0]["logits"] = [10.0 if i == other else 0.0 for i in range(len(labels))]
    rows[0]["text"] = '<script>alert("x")</script> & <img src=x>'
    (run / "test" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main_status(["report", str(run)]) == 0
    text = (run / "report.html").read_text()
    assert "<script>" not in text and "<img src=x>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x&gt;" in text


def test_missing_pieces_are_stated_on_the_page(tested_run: Path, tmp_path: Path) -> None:
    # Tested before per-row predictions existed, never validated: notes, and the stored confusion matrix.
    run = copy_run(tested_run, tmp_path / "old_test")
    (run / "test" / "predictions.jsonl").unlink()
    shutil.rmtree(run / "validate")
    assert main_status(["report", str(run)]) == 0
    page = Page((run / "report.html").read_text())
    text = "".join(page.text)
    assert "test/predictions.jsonl is missing" in text and "fenlei test --config" in text
    assert page.sections["confusion"]["images"] == 1 and "From test/confusion_matrix.png" in text
    assert page.sections["curves"]["images"] == 1 and page.sections["errors"]["notes"] == 1

    # Tested, not validated: the diagram at T = 1 only, and how to get a temperature.
    run = copy_run(tested_run, tmp_path / "no_validate")
    shutil.rmtree(run / "validate")
    assert main_status(["report", str(run)]) == 0
    text = "".join(Page((run / "report.html").read_text()).text)
    assert "No temperature" in text and "fenlei validate --config" in text and "--ckpt_path best" in text

    # A fit in progress: config and metrics.csv only.
    run = tmp_path / "running"
    run.mkdir()
    for name in ("config.yaml", "metrics.csv", "labels.json"):
        shutil.copy(tested_run / name, run / name)
    assert main_status(["report", str(run)]) == 0
    page = Page((run / "report.html").read_text())
    text = "".join(page.text)
    assert "not finished" in text and "has not been tested" in text
    assert [s for s, v in page.sections.items() if v["images"]] == ["curves"]


def test_comparison_page(tested_run: Path, tmp_path: Path) -> None:
    runs = [copy_run(tested_run, tmp_path / name) for name in ("a", "b")]
    (runs[1] / "test" / "predictions.jsonl").unlink()
    output = tmp_path / "pages" / "comparison.html"
    assert main_status(["report", *map(str, runs), "--output", str(output)]) == 0
    assert all((run / "report.html").is_file() for run in runs)
    page = Page(output.read_text())
    metrics = page.sections["metrics"]["rows"]
    assert [r[0] for r in metrics[1:]] == [str(run) for run in runs]
    assert [(output.parent / href).resolve() for href in page.links if href.endswith("report.html")] == [
        (run / "report.html").resolve() for run in runs]
    assert page.sections["curves"]["images"] == 1
    assert any(r[0] == str(runs[1]) and "test/predictions.jsonl is missing" in r[1]
               for r in page.sections["notes"]["rows"])


def test_bundle_temperature(tested_run: Path, tmp_path: Path) -> None:
    run = copy_run(tested_run, tmp_path / "run")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(run / "labels.json", bundle / "labels.json")
    (bundle / "calibration.json").write_text(json.dumps(
        {"by_precision": {"fp32": {"temperature": 2.5, "threshold": {"mode": "none"}}}}))
    assert main_status(["report", str(run), "--bundle", str(bundle)]) == 0
    assert "Temperature 2.5000: the fp32 temperature of the bundle" in "".join(Page((run / "report.html").read_text()).text)


def test_one_line_errors(tested_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert fenlei_user_error(["report", str(tmp_path / "empty")], capsys).endswith(
        f"{tmp_path / 'empty'}: not a fenlei run directory (no config.yaml with run_summary.json, checkpoints/ or "
        "metrics.csv)")
    assert str(tmp_path / "nope") in fenlei_user_error(["report", str(tmp_path / "nope")], capsys)
    run = copy_run(tested_run, tmp_path / "run")
    path = run / "test" / "predictions.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-5]
    path.write_text("\n".join(lines) + "\n")
    assert f"{path}:3: not JSON" in fenlei_user_error(["report", str(run)], capsys)
    assert not (run / "report.html").exists()
    error = fenlei_user_error(["report", str(tested_run), str(tested_run), "--bundle", str(tmp_path)], capsys)
    assert "--bundle" in error


def test_reliability_bins_agree_with_the_ece() -> None:
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(200, 5)) * 3)
    gold = rng.integers(0, 5, size=200)
    bins = reliability_bins(probs, gold, n_bins=10)
    assert bins.count.sum() == 200 and bins.edges[0] == 0.0 and bins.edges[-1] == 1.0
    filled = bins.count > 0
    ece = float(np.sum(bins.count[filled] / 200 * np.abs(bins.accuracy[filled] - bins.confidence[filled])))
    assert abs(ece - bins.ece) < 1e-12 and abs(bins.ece - expected_calibration_error(probs, gold, 10)) < 1e-12
    # A confidence of exactly 1.0 lands in the last bin.
    assert reliability_bins(np.array([[1.0, 0.0]]), np.array([0]), 10).count[-1] == 1


def test_confused_pairs_and_misclassified_rows_on_hand_made_arrays() -> None:
    labels = ["a", "b", "c"]
    gold = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    probs = np.array([[0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.9, 0.05, 0.05], [0.1, 0.1, 0.8],
                      [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    records = [{"line": i + 1, "text": f"t{i}"} for i in range(8)]
    pairs = confused_pairs(gold, probs.argmax(1), probs.max(1), records, labels, top=5, examples=1)
    assert [(p.gold, p.predicted, p.count) for p in pairs] == [("a", "b", 2), ("b", "c", 1), ("c", "a", 1)]
    assert pairs[0].share_of_gold == 2 / 3 and [r["text"] for r in pairs[0].examples] == ["t0"]  # 0.7 before 0.6
    rows = misclassified(gold, probs, records, labels)
    assert [r["line"] for r in rows] == [4, 1, 2, 6]  # 0.8, 0.7, 0.6, 0.5
    assert rows[0]["gold"] == "b" and rows[0]["predicted"] == "c" and rows[0]["p_gold"] == 0.1
