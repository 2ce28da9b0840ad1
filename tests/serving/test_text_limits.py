"""fenlei.text_limits, and `infer` on long, unencodable and invisible texts (issue 16, items 1 and 2)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fenlei.serving.infer import main as infer_main
from fenlei.serving.predictor import BundlePredictor
from fenlei.text_limits import CHARS_PER_TOKEN, char_budget, cut_text, cut_texts, text_problem
from tests.serving.serve_support import FIXTURE_BUNDLE


def test_cut_and_budget() -> None:
    assert char_budget(128) == 128 * CHARS_PER_TOKEN and char_budget(0) == CHARS_PER_TOKEN
    assert cut_text("abcdef", 3) == ("abc", True) and cut_text("abc", 3) == ("abc", False)
    assert cut_texts(["ab", "abcd", "a"], 2) == (["ab", "ab", "a"], [1])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("hello", None),
        ("a\u200bb", None),  # zero-width inside real text is fine
        ("\u4f60\u597d", None),
        ("\U0001f600", None),  # an emoji (a surrogate pair in UTF-16, one character here)
        ("\ud800", "lone surrogate (U+D800) at character 1"),
        ("ok\udc00", "lone surrogate (U+DC00) at character 3"),
        ("\u200b\u200c\u200d\ufeff\u2060", "no visible characters"),
        ("\x00\x00\x00", "no visible characters"),
        (" \t\n\u3000\u00a0", "no visible characters"),
        ("\u3164\u2800", "no visible characters"),
    ],
)
def test_text_problem(text: str, problem: str | None) -> None:
    found = text_problem(text)
    assert (found is None) if problem is None else (problem in found)
    if found:
        assert text not in found or not text.strip()  # the message does not repeat the text


def test_predictor_cuts_before_tokenizing() -> None:
    predictor = BundlePredictor(FIXTURE_BUNDLE)
    assert predictor.max_chars == char_budget(predictor.max_length)
    started = time.perf_counter()
    long_text = "refund my card " * 700_000  # 10 MB
    [prediction] = predictor.predict([long_text])
    assert time.perf_counter() - started < 2.0  # the 10 MB line took 9.3 s and 2.1 GB before the cut
    assert prediction == predictor.predict([long_text[: predictor.max_chars]])[0]


def test_infer_cuts_long_texts_and_reports_unusable_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [json.dumps({"id": 1, "text": "refund my card"}),
             json.dumps({"id": 2, "text": "courier late " * 500}),  # 6500 characters > 32 x 32
             '{"id": 3, "text": "\\ud800 broken"}',
             json.dumps({"id": 4, "text": "\u200b\u200b"}),
             json.dumps({"id": 5, "text": "\u0000"}),
             '{"id": "\\udfff", "text": "password reset"}']  # a kept field that cannot be UTF-8
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert infer_main(["--bundle", str(FIXTURE_BUNDLE), "--input", str(src), "--output", str(out),
                       "--no_progress"]) == 1
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [("error" in r) for r in rows] == [False, False, True, True, True, False]
    assert "lone surrogate (U+D800) at character 1" in rows[2]["error"]
    assert "no visible characters" in rows[3]["error"] and "no visible characters" in rows[4]["error"]
    assert rows[5]["id"] == "\udfff" and "predicted_label" in rows[5]  # escaped in the file, read back exactly
    err = capsys.readouterr().err
    assert f"{src}:2: warning: text cut to its first 1024 characters before tokenizing" in err
    assert "6 rows" in err and "3 predicted, 3 malformed; 1 texts cut to 1024 characters" in err
    assert infer_main(["--bundle", str(FIXTURE_BUNDLE), "--input", str(src), "--output", str(out), "--no_progress",
                       "--max_chars", "5"]) == 1
    assert "3 texts cut to 5 characters" in capsys.readouterr().err  # rows 1, 2, 6 (3 errs within 5 chars)
