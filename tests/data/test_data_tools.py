"""``python cli.py data ...``: masking, dedup, split, stats, oversampling, augmentation interface, safety rules."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from fenlei.data import tools as data_tools
from fenlei.data.tools import (
    Augmenter,
    BackTranslationAugmenter,
    DataError,
    augment_rows,
    mask_text,
    normalize_text,
    stratified_split_n,
)
from tests.conftest import REPO_ROOT, fenlei_user_error, write_jsonl


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def labelled(counts: dict[str, int]) -> list[dict]:
    rows = []
    for label, n in counts.items():
        rows += [{"id": f"{label}-{i}", "text": f"{label} text {i}", "label": label} for i in range(n)]
    return rows


# ----------------------------------------------------------------------------------------------- mask


@pytest.mark.parametrize(
    "text, expected",
    [
        ("call 13812345678 now", "call [PHONE] now"),
        ("电话138-1234-5678谢谢", "电话[PHONE]谢谢"),
        ("手机 138 1234 5678", "手机 [PHONE]"),
        ("+86 138 1234 5678", "[PHONE]"),
        ("+8613812345678", "[PHONE]"),
        ("0086-13812345678", "[PHONE]"),
        ("US: +1 (555) 123-4567.", "US: [PHONE]."),
        ("座机 010-12345678", "座机 [PHONE]"),
        ("mail a.b+c@example.co.uk please", "mail [EMAIL] please"),
        ("邮箱zhang_san@qq.com", "邮箱[EMAIL]"),
        ("order #48213 is late", "order [ORDER] is late"),
        ("my order 1234567 arrived", "my order [ORDER] arrived"),
        ("订单号 20231122334455 没到", "订单号 [ORDER] 没到"),
        ("身份证 11010519491231002X", "身份证 [ID]"),
        ("身份证号110105194912310021", "身份证号[ID]"),
        ("card 622202123456789", "card [ID]"),
    ],
)
def test_mask_each_pii_type(text: str, expected: str) -> None:
    assert mask_text(text) == expected


@pytest.mark.parametrize(
    "text",
    ["price $19.99 in 2023, 3 items", "1500元 买了 2 件", "on 2023-11-22 at 12:30", "reorder 12345 pieces", "v1.2.3"],
)
def test_mask_leaves_ordinary_numbers(text: str) -> None:
    assert mask_text(text) == text


def test_mask_command_counts_and_keeps_fields(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"text": "call 13812345678 or a@b.com", "title": "订单号 123456789", "label": "x", "extra": 1},
            {"text": "nothing here 2023", "title": 13912345678, "label": "y", "extra": 2},
        ],
    )
    out = tmp_path / "out.jsonl"
    assert data_tools.main(["mask", "--input", str(src), "--output", str(out), "--fields", "text", "title"]) == 0
    rows = read_jsonl(out)
    assert rows[0] == {"text": "call [PHONE] or [EMAIL]", "title": "订单号 [ORDER]", "label": "x", "extra": 1}
    assert rows[1]["text"] == "nothing here 2023" and rows[1]["title"] == "[PHONE]"
    assert "订单号" in out.read_text(encoding="utf-8")  # ensure_ascii=False
    assert "[PHONE] 2, [EMAIL] 1, [ORDER] 1, [ID] 0" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- dedup


def test_normalize_text() -> None:
    assert normalize_text("Ｈｅｌｌｏ，  World！") == normalize_text("hello world") == "hello world"
    assert normalize_text("你好。【测试】") == normalize_text("你好 测试")


def test_dedup_exact_vs_normalized(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": 0, "text": "Hello, world!", "label": "a"},
            {"id": 1, "text": "Hello, world!", "label": "b"},  # exact duplicate, conflicting label
            {"id": 2, "text": "hello   WORLD", "label": "a"},  # duplicate only when normalized
            {"id": 3, "text": "你好，世界。", "label": "c"},
            {"id": 4, "text": "你好 世界", "label": "c"},  # normalized duplicate, same label
            {"id": 5, "text": "something else", "label": "a"},
        ],
    )
    exact, norm = tmp_path / "exact.jsonl", tmp_path / "norm.jsonl"
    assert data_tools.main(["dedup", "--input", str(src), "--output", str(exact)]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert [r["id"] for r in read_jsonl(exact)] == [0, 2, 3, 4, 5]
    assert data_tools.main(["dedup", "--input", str(src), "--output", str(norm), "--normalize"]) == 0
    out = capsys.readouterr().out
    assert "removed 3" in out and "2 duplicate groups, 1 with conflicting labels" in out
    assert [r["id"] for r in read_jsonl(norm)] == [0, 3, 5]  # first occurrence kept, all fields kept
    assert read_jsonl(norm)[0] == {"id": 0, "text": "Hello, world!", "label": "a"}


# ----------------------------------------------------------------------------------------------- split


def test_split_stratified_deterministic_disjoint(tmp_path: Path) -> None:
    rows = labelled({"a": 40, "b": 12, "c": 3, "d": 2, "e": 1})
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    first, second, other = tmp_path / "s1", tmp_path / "s2", tmp_path / "s3"
    for out, seed in ((first, "42"), (second, "42"), (other, "7")):
        assert data_tools.main(["split", "--input", str(src), "--out_dir", str(out), "--seed", seed]) == 0
    names = ["train", "validation", "test"]
    parts = {n: read_jsonl(first / f"{n}.jsonl") for n in names}
    ids = [r["id"] for n in names for r in parts[n]]
    assert sorted(ids) == sorted(r["id"] for r in rows) and len(ids) == len(set(ids))  # a partition
    for label in "abc":  # every class with >= 3 examples in every split
        assert all(any(r["label"] == label for r in parts[n]) for n in names)
    counts = {n: Counter(r["label"] for r in parts[n]) for n in names}
    assert (counts["train"]["a"], counts["validation"]["a"], counts["test"]["a"]) == (28, 6, 6)
    assert counts["train"]["e"] == 1
    for n in names:
        assert (first / f"{n}.jsonl").read_bytes() == (second / f"{n}.jsonl").read_bytes()
    assert any((first / f"{n}.jsonl").read_bytes() != (other / f"{n}.jsonl").read_bytes() for n in names)


def test_two_way_split_matches_datamodule_rule() -> None:
    labels = ["x"] * 10 + ["y"] * 5 + ["z"]
    train, val = stratified_split_n(labels, [0.8, 0.2], seed=3)
    assert Counter(labels[i] for i in val) == {"x": 2, "y": 1}
    assert sorted(train + val) == list(range(len(labels)))
    with pytest.raises(ValueError, match="summing to 1"):
        stratified_split_n(labels, [0.5, 0.2, 0.2], seed=0)


# ----------------------------------------------------------------------------------------------- stats, oversample


def test_stats_numbers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", labelled({"10": 100, "2": 50, "b": 5}))
    out = tmp_path / "stats.json"
    assert data_tools.main(["stats", "--input", str(src), "--min_count", "80", "--output", str(out)]) == 0
    stats = json.loads(out.read_text())
    assert stats["counts"] == {"2": 50, "10": 100, "b": 5} and list(stats["counts"]) == ["2", "10", "b"]
    assert stats["imbalance_ratio"] == 20.0 and stats["below_threshold"] == ["2", "b"]
    printed = capsys.readouterr().out
    assert "| 10 | 100 | 64.52% |  |" in printed and "| b | 5 | 3.23% | yes |" in printed


def test_oversample_counts(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", labelled({"big": 100, "small": 7, "tiny": 1}))
    out = tmp_path / "out.jsonl"
    assert data_tools.main(["oversample", "--input", str(src), "--output", str(out), "--min_per_class", "20"]) == 0
    rows = read_jsonl(out)
    assert Counter(r["label"] for r in rows) == {"big": 100, "small": 20, "tiny": 20}
    assert [r for r in rows if not r.get("oversampled")] == labelled({"big": 100, "small": 7, "tiny": 1})
    small_ids = Counter(r["id"] for r in rows if r["label"] == "small")
    assert set(small_ids.values()) <= {2, 3}  # duplicated evenly
    again = tmp_path / "again.jsonl"
    data_tools.main(["oversample", "--input", str(src), "--output", str(again), "--min_per_class", "20"])
    assert again.read_bytes() == out.read_bytes()


# ----------------------------------------------------------------------------------------------- augment


class UpperAugmenter(Augmenter):
    def augment(self, texts):
        return [t.upper() for t in texts]


def test_augment_interface_with_fake_augmenter() -> None:
    rows = [{"text": "hello", "label": "a", "id": 1}, {"text": "OK", "label": "b", "id": 2}]
    out, added = augment_rows(rows, "text", UpperAugmenter())
    assert added == 1  # "OK" is unchanged, so no copy
    assert out == rows + [{"text": "HELLO", "label": "a", "id": 1, "augmented": True}]


def test_augment_missing_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(DataError, match="--backtranslate_model model not found"):
        BackTranslationAugmenter(tmp_path / "no-such-model")
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello", "label": "a"}])
    argv = [
        "augment",
        "--input",
        str(src),
        "--output",
        str(tmp_path / "o.jsonl"),
        "--backtranslate_model",
        str(tmp_path / "nope"),
    ]
    assert "model not found" in fenlei_user_error(["data", *argv], capsys)
    assert not (tmp_path / "o.jsonl").exists()


# ----------------------------------------------------------------------------------------------- safety, errors, CLI


@pytest.mark.parametrize("operation", ["dedup", "mask", "oversample", "stats"])
def test_refuses_to_overwrite_input(tmp_path: Path, operation: str, capsys: pytest.CaptureFixture) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", labelled({"a": 3}))
    before = src.read_bytes()
    same = str(tmp_path / "sub" / ".." / "in.jsonl")  # the same file, spelt differently
    argv = [operation, "--input", str(src), "--output", same] + (
        ["--min_per_class", "5"] if operation == "oversample" else []
    )
    assert "refusing to overwrite the input" in fenlei_user_error(["data", *argv], capsys)
    assert src.read_bytes() == before


def test_split_refuses_input_inside_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_jsonl(tmp_path / "train.jsonl", labelled({"a": 3}))
    error = fenlei_user_error(["data", "split", "--input", str(src), "--out_dir", str(tmp_path)], capsys)
    assert f"{tmp_path / 'train.jsonl'}: output is the input file" in error


def test_bad_input_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("text,label\nfine,a\nno label,\n", encoding="utf-8")
    assert f"fenlei: error: {src}:3: empty label" in fenlei_user_error(["data", "stats", "--input", str(src)], capsys)


def test_cli_dispatch_and_no_torch(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text,label\n你好,a\nhi,a\nyo,b\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "cli.py", "data", "stats", "--input", str(src), "--min_count", "2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "| a | 2 | 66.67% |  |" in done.stdout and "| b | 1 | 33.33% | yes |" in done.stdout
    code = (
        "import sys; from fenlei.data import tools as data_tools; "
        f"rc = data_tools.main(['dedup', '--input', {str(src)!r}, '--output', {str(tmp_path / 'o.jsonl')!r}]); "
        "heavy = [m for m in ('torch', 'lightning', 'transformers') if m in sys.modules]; "
        "assert rc == 0 and not heavy, (rc, heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
