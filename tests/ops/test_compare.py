"""Model comparison on two tiny runs (markdown, CSV, PNG, sane numbers), the metric maths on hand-made
probabilities, and ``al select --run`` with a real run directory."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fenlei.ops import active_learning, compare
from fenlei.ops.runs import OpsError
from fenlei.ops.scorers import RunScorer, load_scorer
from fenlei.training.cli import run_lightning_cli
from tests.conftest import REPO_ROOT, fenlei_user_error, tiny_overrides, write_jsonl

QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")


@pytest.fixture(scope="module")
def tiny_runs(tiny_model: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("compare_runs")
    runs = []
    for name, lr in (("run_a", "3e-3"), ("run_b", "1e-3")):
        run_dir = root / name
        run_lightning_cli(args=["fit", "--config", QUICKSTART, *tiny_overrides(tiny_model, tiny_data, run_dir),
                                "--trainer.max_epochs=2", "--trainer.limit_train_batches=4",
                                "--trainer.precision=32-true", f"--model.init_args.lr={lr}",
                                "--model.init_args.head_lr=1e-2", "--trainer.num_sanity_val_steps=0"])
        runs.append(run_dir)
    return runs


def test_compare_two_runs_writes_report_with_sane_numbers(tiny_runs: list[Path], tiny_model: Path,
                                                          tiny_data: Path, tmp_path: Path) -> None:
    from transformers import BertModel

    encoder = BertModel.from_pretrained(tiny_model)
    # The classifier drops BERT's pooler and adds a linear head (hidden 32 -> 4 classes).
    expected_params = sum(p.numel() for n, p in encoder.named_parameters() if not n.startswith("pooler")) + 32 * 4 + 4
    out = tmp_path / "report"
    code = compare.main([*map(str, tiny_runs), "--data", str(tiny_data / "test.jsonl"), "--out", str(out),
                         "--latency_samples", "8", "--warmup", "2"])
    assert code == 0
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert {r["model"] for r in rows} == {"run_a", "run_b"}
    f1s = [float(r["f1_weighted"]) for r in rows]
    assert f1s == sorted(f1s, reverse=True)
    gold = [json.loads(line)["label"] for line in (tiny_data / "test.jsonl").read_text().splitlines()]
    texts = [json.loads(line)["text"] for line in (tiny_data / "test.jsonl").read_text().splitlines()]
    for row in rows:
        run_dir = Path(row["source"])
        scorer = RunScorer(run_dir)
        predicted = [scorer.label_names[i] for i in scorer.predict_proba(texts).argmax(axis=1)]
        accuracy = float(np.mean([p == g for p, g in zip(predicted, gold, strict=True)]))
        assert abs(float(row["top1_acc"]) - accuracy) < 1e-9  # top-1 is the argmax accuracy
        assert float(row["top5_acc"]) == 1.0  # 4 classes: the gold label is always in the top 5
        assert 0.0 <= float(row["f1_macro"]) <= 1.0 and 0.0 <= float(row["f1_weighted"]) <= 1.0
        assert 0.0 < float(row["latency_p50_ms"]) <= float(row["latency_p95_ms"]) < 5000
        assert int(row["n_examples"]) == 16 and int(row["unknown_gold"]) == 0
        assert int(row["n_params"]) == expected_params
        summary = json.loads((run_dir / "run_summary.json").read_text())
        assert Path(summary["best_checkpoint"]) == scorer.checkpoint
    markdown = (out / "compare.md").read_text()
    assert "| model | f1_weighted | f1_macro | top1_acc | top5_acc | latency_p50_ms | latency_p95_ms |" in markdown
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_scorer_matches_the_run_test_predictions(tiny_runs: list[Path], tiny_model: Path, tiny_data: Path,
                                                     ) -> None:
    """The scorer (tokenizer + best checkpoint from the run directory) predicts what ``cli.py predict`` predicts."""
    run_dir = tiny_runs[0]
    run_lightning_cli(args=["predict", "--config", QUICKSTART, *tiny_overrides(tiny_model, tiny_data, run_dir),
                            "--ckpt_path=best", "--trainer.precision=32-true"])
    predictions = [json.loads(line) for line in (run_dir / "predict" / "predictions.jsonl").read_text().splitlines()]
    texts = [json.loads(line)["text"] for line in (tiny_data / "test.jsonl").read_text().splitlines()]
    scorer = load_scorer(run_dir)
    probs = scorer.predict_proba(texts, batch_size=5)
    assert probs.shape == (16, 4) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [scorer.label_names[i] for i in probs.argmax(axis=1)] == [p["label"] for p in predictions]
    assert np.allclose(probs.max(axis=1), [p["confidence"] for p in predictions], atol=1e-4)


def test_quality_metrics_on_hand_made_probabilities() -> None:
    labels = ["a", "b", "c", "d", "e", "f"]
    probs = np.array([
        [0.50, 0.20, 0.10, 0.10, 0.05, 0.05],  # gold a: top-1 hit
        [0.50, 0.20, 0.10, 0.10, 0.05, 0.05],  # gold b: top-1 miss, top-5 hit
        [0.05, 0.50, 0.10, 0.10, 0.20, 0.05],  # gold f: outside the top 5
        [0.05, 0.10, 0.60, 0.10, 0.10, 0.05],  # gold c: hit
    ])
    metrics = compare.quality_metrics(probs, ["a", "b", "f", "c"], labels)
    assert metrics["top1_acc"] == 0.5 and metrics["top5_acc"] == 0.75 and metrics["unknown_gold"] == 0
    # predicted a, a, b, c vs gold a, b, f, c: F1 a = 2/3, b = 0, c = 1, f = 0 -> macro 5/12, weighted 5/12
    assert abs(metrics["f1_macro"] - 5 / 12) < 1e-9 and abs(metrics["f1_weighted"] - 5 / 12) < 1e-9
    with pytest.raises(OpsError, match="shape"):
        compare.quality_metrics(probs[:, :3], ["a", "b", "f", "c"], labels)


def test_latency_sample_is_fixed_and_seeded() -> None:
    texts = [f"t{i}" for i in range(50)]
    assert compare.latency_sample(texts, 10, 0) == compare.latency_sample(texts, 10, 0)
    assert compare.latency_sample(texts, 10, 0) != compare.latency_sample(texts, 10, 1)
    assert sorted(compare.latency_sample(texts, 80, 0)) == sorted(texts)


def test_compare_rejects_unknown_directories(tmp_path: Path, tiny_data: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    error = fenlei_user_error(["compare", str(tmp_path / "empty"), "--data", str(tiny_data / "test.jsonl"),
                               "--out", str(tmp_path / "o")], capsys)
    assert "neither a run directory" in error and str(tmp_path / "empty") in error


def test_al_select_with_a_run_directory(tiny_runs: list[Path], tiny_data: Path, tmp_path: Path) -> None:
    pool_rows: list[dict[str, Any]] = [{"text": r["text"], "id": i} for i, r in enumerate(
        json.loads(line) for line in (tiny_data / "test.jsonl").read_text().splitlines())]
    pool_rows.append({"text": pool_rows[0]["text"].upper() + "!", "id": 99})  # a normalized repeat of row 0
    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows)
    out = tmp_path / "queue.jsonl"
    args = ["select", "--run", str(tiny_runs[0]), "--pool", str(pool), "--n", "5", "--strategy", "entropy",
            "--out", str(out)]
    assert active_learning.main(args) == 0
    queue = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(queue) == 5 and all(q["id"] != 99 for q in queue)
    scores = [q["al"]["score"] for q in queue]
    assert scores == sorted(scores, reverse=True)
    texts = [r["text"] for r in pool_rows[:16]]
    probs = RunScorer(tiny_runs[0]).predict_proba(texts)
    expected = active_learning.select_indices(active_learning.uncertainty_scores(probs, "entropy"), 5)
    assert [q["id"] for q in queue] == expected


def test_compare_a_run_with_its_exported_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
                                                tiny_data: Path, tmp_path: Path) -> None:
    """Bundles plug in through fenlei.serving.predictor: an fp32 bundle of a run scores like the run itself."""
    from tests import deploy_support  # onnxruntime is a declared dependency (the deploy extra): no skip

    run_dir = deploy_support.tiny_run(tmp_path_factory, tiny_model, tiny_data)  # cached for the whole session
    bundle = deploy_support.tiny_bundle(tmp_path_factory, tiny_model, tiny_data)
    out = tmp_path / "report"
    code = compare.main([str(run_dir), str(bundle), "--data", str(tiny_data / "test.jsonl"), "--out", str(out),
                         "--names", "torch", "onnx_fp32", "--precision", "fp32", "--latency_samples", "8",
                         "--warmup", "2"])
    assert code == 0
    rows = {r["model"]: r for r in csv.DictReader((out / "compare.csv").open())}
    assert set(rows) == {"torch", "onnx_fp32"}
    # Same weights: top-1 agrees up to at most one near-tie among 16 texts; sizes agree within 10%.
    assert abs(float(rows["torch"]["top1_acc"]) - float(rows["onnx_fp32"]["top1_acc"])) <= 1 / 16 + 1e-9
    assert abs(int(rows["onnx_fp32"]["n_params"]) / int(rows["torch"]["n_params"]) - 1) < 0.10
    assert float(rows["onnx_fp32"]["latency_p95_ms"]) > 0
    scorer = load_scorer(bundle, precision="int8")
    assert scorer.label_names == ["billing", "bug", "login", "shipping"]
    probs = scorer.predict_proba(["refund my card please"], batch_size=1)
    assert probs.shape == (1, 4) and abs(float(probs.sum()) - 1.0) < 1e-5
