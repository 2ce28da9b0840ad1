"""The probe-first cascade (``fenlei cascade``) on a tiny random Llama: a probe saved by ``fenlei probe`` and a
LoRA generative classifier fitted for a few steps on the same model, two label fields."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from fenlei.commands import main as fenlei
from fenlei.probe.cascade import Cascade, CascadeError, Reviewer, load_cascade
from fenlei.probe.run import probe
from tests.conftest import CLASS_WORDS, FILLER, fenlei_user_error, write_jsonl
from tests.decoder_support import write_tiny_decoder

URGENCY = {"billing": "high", "bug": "high", "login": "low", "shipping": "low"}
INSTRUCTION = "text : {text}"


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    labels = list(CLASS_WORDS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = [rng.choice(CLASS_WORDS[label][:2])] + rng.sample(FILLER, rng.randint(0, 3))
        rows.append({"id": f"t{i}", "text": " ".join(words), "label": label, "urgency": URGENCY[label]})
    return rows


def run_fenlei(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        fenlei(argv)
    return int(info.value.code or 0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The tiny model, the data, a saved probe and a reviewer run directory (config.yaml + checkpoints/best.ckpt)."""
    import lightning.pytorch as pl

    from datamodules.prompt_classification import PromptClassificationDataModule
    from lightning_modules.generative_classifier import GenerativeClassifier

    root = tmp_path_factory.mktemp("cascade")
    model = write_tiny_decoder(root / "llama", "llama")
    data = root / "data"
    write_jsonl(data / "train.jsonl", _rows(32, 1))
    write_jsonl(data / "validation.jsonl", _rows(12, 2))
    write_jsonl(data / "test.jsonl", _rows(12, 3))
    probe(model=str(model), data_dir=str(data), layer=-1, cache_dir=str(root / "cache"), run_dir=str(root / "probe"),
          C=10, quiet=True)
    data_args = {"tokenizer": str(model), "data_dir": str(data), "label_fields": ["label", "urgency"],
                 "field_names": {"label": "category"}, "instruction": INSTRUCTION, "batch_size": 8}
    pl.seed_everything(0)
    dm = PromptClassificationDataModule(**data_args)
    module = GenerativeClassifier(pretrained=str(model), num_classes=dm.num_classes, label_names=dm.label_names,
                                  lr=1e-2, warmup=0)
    run = root / "reviewer"
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor=None)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, default_root_dir=str(run),
                         callbacks=[checkpoint], enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    config = {"model": {"class_path": "lightning_modules.generative_classifier.GenerativeClassifier",
                        "init_args": {"pretrained": str(model)}},
              "data": {"class_path": "datamodules.prompt_classification.PromptClassificationDataModule",
                       "init_args": data_args}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return SimpleNamespace(root=root, model=model, data=data, probe=root / "probe", reviewer=run)


@pytest.fixture(scope="module")
def loaded(world: SimpleNamespace) -> SimpleNamespace:
    cascade, shared = load_cascade(world.probe, str(world.reviewer), device="cpu")
    rows = [json.loads(line) for line in (world.data / "test.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows]
    confidence = cascade.predictor.predict_proba(texts).max(axis=1)
    return SimpleNamespace(cascade=cascade, shared=shared, texts=texts, confidence=confidence)


class Spy:
    """Counts the texts handed to the reviewer's label scoring."""

    def __init__(self, reviewer: Reviewer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[str]] = []
        original = reviewer.score

        def score(texts, batch_size=8):
            self.calls.append(list(texts))
            return original(texts, batch_size)

        monkeypatch.setattr(reviewer, "score", score)

    @property
    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]


def _direct_label_scoring(reviewer: Reviewer, texts: list[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """decode_score on one batch built the DataModule's way (PromptDataset + PromptCollator)."""
    from datamodules.prompt_classification import PromptCollator, PromptDataset

    dm, module = reviewer.datamodule, reviewer.module
    dataset = PromptDataset([dm.encode_prompt(t) for t in texts], None, module.spec)
    batch = PromptCollator(dm.tokenizer.pad_token_id or 0)([dataset[i] for i in range(len(dataset))])
    choice, scores = module.decode_score(batch)
    return choice, [torch.softmax(s.float(), dim=-1) for s in scores]


def test_confident_texts_never_reach_the_reviewer_and_the_rest_do(loaded, monkeypatch):
    cascade = loaded.cascade
    threshold = float(np.median(loaded.confidence))
    monkeypatch.setattr(cascade, "probe_threshold", threshold)
    monkeypatch.setattr(cascade, "fields", "first")
    spy = Spy(cascade.reviewer, monkeypatch)
    records = cascade.answer(loaded.texts, loaded.texts)
    low = [t for t, c in zip(loaded.texts, loaded.confidence, strict=True) if c < threshold]
    assert 0 < len(low) < len(loaded.texts)
    assert spy.calls == [low]  # one batched call with exactly the texts under the threshold, in input order
    probe_labels = [cascade.predictor.label_names[i] for i in cascade.predictor.predict_proba(loaded.texts).argmax(1)]
    for record, c, label in zip(records, loaded.confidence, probe_labels, strict=True):
        assert list(record.fields) == ["category"]
        value = record.fields["category"]
        assert record.route == value["route"] == ("probe" if c >= threshold else "reviewer")
        if record.route == "probe":
            assert value["label"] == label and value["score"] == pytest.approx(c) and not value["uncertain"]


def test_the_reviewers_answers_are_label_scoring_called_directly(loaded, monkeypatch):
    cascade = loaded.cascade
    monkeypatch.setattr(cascade, "probe_threshold", float(np.median(loaded.confidence)))
    monkeypatch.setattr(cascade, "reviewer_threshold", 0.0)
    records = cascade.answer(loaded.texts, loaded.texts)  # fields="all": both fields, every text through the LM
    routed = [i for i, r in enumerate(records) if r.route == "reviewer"]
    choice, probs = _direct_label_scoring(cascade.reviewer, [loaded.texts[i] for i in routed])
    spec = cascade.reviewer.module.spec
    for j, i in enumerate(routed):
        for k, name in enumerate(["category", "urgency"]):
            value = records[i].fields[name]
            assert value["predicted_label"] == value["label"] == spec.labels[k][int(choice[j, k])]
            assert value["score"] == pytest.approx(float(probs[k][j, choice[j, k]]), abs=1e-5)
    for record in records:  # the second field has no probe: always the reviewer's
        assert record.fields["urgency"]["route"] == "reviewer"


def test_thresholds_zero_and_one(loaded, monkeypatch):
    cascade = loaded.cascade
    monkeypatch.setattr(cascade, "fields", "first")
    spy = Spy(cascade.reviewer, monkeypatch)
    monkeypatch.setattr(cascade, "probe_threshold", 0.0)
    records = cascade.answer(loaded.texts, loaded.texts)
    assert spy.texts == [] and {r.route for r in records} == {"probe"}
    monkeypatch.setattr(cascade, "probe_threshold", 1.0)
    monkeypatch.setattr(cascade, "reviewer_threshold", 0.0)
    records = cascade.answer(loaded.texts, loaded.texts)
    assert spy.texts == loaded.texts and {r.route for r in records} == {"reviewer"}
    assert not any(r.fields["category"]["uncertain"] for r in records)
    monkeypatch.setattr(cascade, "reviewer_threshold", 1.0)  # the reviewer is never certain here: all uncertain
    records = cascade.answer(loaded.texts, loaded.texts)
    assert all(r.fields["category"]["uncertain"] and r.fields["category"]["label"] == "uncertain" for r in records)
    assert all(r.fields["category"]["score"] < 1.0 for r in records)


def test_a_reviewer_score_under_its_threshold_is_uncertain(loaded, monkeypatch):
    cascade = loaded.cascade
    monkeypatch.setattr(cascade, "probe_threshold", 1.0)
    scores = sorted(r.fields["category"]["score"] for r in cascade.answer(loaded.texts, loaded.texts))
    cut = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    monkeypatch.setattr(cascade, "reviewer_threshold", cut)
    for record in cascade.answer(loaded.texts, loaded.texts):
        for value in record.fields.values():
            assert value["uncertain"] == (value["score"] < cut)
            assert value["label"] == ("uncertain" if value["uncertain"] else value["predicted_label"])


def test_the_shared_model_gives_the_probes_own_features_and_keeps_the_adapter(world, loaded):
    from fenlei.probe.predictor import ProbePredictor

    assert loaded.shared
    cascade = loaded.cascade
    before = _direct_label_scoring(cascade.reviewer, loaded.texts[:4])
    alone = ProbePredictor(world.probe, device="cpu")
    np.testing.assert_allclose(cascade.predictor.features(loaded.texts), alone.features(loaded.texts), atol=1e-5)
    after = _direct_label_scoring(cascade.reviewer, loaded.texts[:4])
    torch.testing.assert_close(after[1][0], before[1][0])  # the adapter is on again after extraction
    with cascade.reviewer.module.model.disable_adapter():
        base = _direct_label_scoring(cascade.reviewer, loaded.texts[:4])
    assert not torch.allclose(base[1][0], before[1][0], atol=1e-4)  # and it does change the answers
    separate, shared = load_cascade(world.probe, str(world.reviewer), device="cpu", share_model=False)
    assert not shared and separate.predictor.model is not separate.reviewer.module.model


def test_other_labels_are_refused():
    reviewer = SimpleNamespace(field_labels=[["a", "b"]], field_names=["category"])
    predictor = SimpleNamespace(label_names=["a", "c"], probe=SimpleNamespace(threshold=0.5, uncertain_label="uncertain"))
    with pytest.raises(CascadeError, match=r"probe only: \['c'\]; reviewer only: \['b'\]"):
        Cascade(predictor, reviewer)
    predictor.label_names = ["b", "a"]
    with pytest.raises(CascadeError, match="--reviewer_threshold must be a number in"):
        Cascade(predictor, reviewer, reviewer_threshold=1.5)


def test_command_writes_predictions_and_summary(world, tmp_path, capsys):
    out = tmp_path / "cascade.jsonl"
    source = world.data / "test.jsonl"
    assert run_fenlei(["cascade", "--probe_dir", str(world.probe), "--reviewer", str(world.reviewer), "--input",
                       str(source), "--output", str(out), "--probe_threshold", "0.3", "--reviewer_threshold", "0.4",
                       "--device", "cpu"]) == 0
    assert "routed to the reviewer" in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    inputs = [json.loads(line) for line in source.read_text().splitlines()]
    assert [r["row"] for r in rows] == list(range(len(inputs))) and [r["id"] for r in rows] == [r["id"] for r in inputs]
    for row, given in zip(rows, inputs, strict=True):
        assert set(row["fields"]) == {"category", "urgency"} and row["label"] == row["fields"]["category"]["label"]
        assert row["route"] == row["fields"]["category"]["route"]
        assert row["fields"]["category"]["true_label"] == given["label"]
        assert row["fields"]["urgency"]["true_label"] == given["urgency"]
        assert set(row["fields"]["urgency"]) == {"label", "predicted_label", "score", "route", "uncertain", "true_label"}
    summary = json.loads((tmp_path / "cascade.summary.json").read_text())
    n = len(rows)
    routed = sum(r["route"] == "reviewer" for r in rows)
    assert summary["texts"] == n and summary["routed"] == routed and summary["share_routed"] == round(routed / n, 6)
    assert summary["lm_texts"] == n  # two fields, fields=all: every text goes through the LM
    assert summary["probe_threshold"] == 0.3 and summary["reviewer_threshold"] == 0.4 and summary["shared_model"]
    assert summary["texts_per_s"] > 0 and summary["load_seconds"] > 0
    category = summary["fields"]["category"]
    answered = [r for r in rows if not r["fields"]["category"]["uncertain"]]
    correct = sum(r["label"] == r["fields"]["category"]["true_label"] for r in answered)
    assert category["answered"] == len(answered) and category["coverage"] == round(len(answered) / n, 6)
    assert category["accuracy"] == (round(correct / len(answered), 6) if answered else None)
    assert sum(part["texts"] for part in category["by_route"].values()) == n
    assert summary["fields"]["urgency"]["by_route"].keys() == {"reviewer"}


def test_command_first_field_and_unlabelled_input(world, tmp_path, capsys):
    source = write_jsonl(tmp_path / "new.jsonl", [{"text": r["text"]} for r in _rows(6, 9)])
    out = tmp_path / "o.jsonl"
    assert run_fenlei(["cascade", "--probe_dir", str(world.probe), "--reviewer", str(world.reviewer), "--input",
                       str(source), "--output", str(out), "--summary", str(tmp_path / "s.json"), "--fields", "first",
                       "--probe_threshold", "0", "--device", "cpu"]) == 0
    assert "the probe threshold is 0: the probe answers every text and none is routed" in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [list(r["fields"]) for r in rows] == [["category"]] * 6 and {r["route"] for r in rows} == {"probe"}
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["lm_texts"] == 0 and summary["routed"] == 0 and "accuracy" not in summary["fields"]["category"]


def test_bad_input_is_one_line_naming_file_line_and_field(world, tmp_path, capsys):
    base = ["cascade", "--probe_dir", str(world.probe), "--reviewer", str(world.reviewer), "--device", "cpu",
            "--quiet", "--output", str(tmp_path / "o.jsonl")]
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"text": "login"}, {"body": "refund"}])
    error = fenlei_user_error([*base, "--input", str(missing)], capsys)
    assert error.startswith(f"fenlei: error: {missing}:2: missing field 'text'")
    partial = write_jsonl(tmp_path / "partial.jsonl", [{"text": "login", "label": "login"}, {"text": "refund"}])
    error = fenlei_user_error([*base, "--input", str(partial)], capsys)
    assert error.startswith(f"fenlei: error: {partial}:2: missing field 'label'")
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"text": "login"}, {"text": "  "}])
    assert f"{empty}:2: empty text" in fenlei_user_error([*base, "--input", str(empty)], capsys)
    assert "--input nope.jsonl: no such file" in fenlei_user_error([*base, "--input", "nope.jsonl"], capsys)
    error = fenlei_user_error([*base, "--input", str(missing), "--probe_threshold", "2"], capsys)
    assert error == "fenlei: error: --probe_threshold must be a number in [0, 1], got 2.0"
    assert not (tmp_path / "o.jsonl").exists()


def test_a_reviewer_answering_one_label_for_everything_is_named_collapsed():
    from fenlei.probe.cascade import CascadeRecord, collapsed_routes, summarise

    def record(route: str, label: str, uncertain: bool = False) -> CascadeRecord:
        value = {"label": label, "predicted_label": label, "score": 0.9, "route": route, "uncertain": uncertain}
        return CascadeRecord(route, {"category": value})

    probe_rows = [record("probe", label) for label in ("a", "b", "c") * 10]
    collapsed = probe_rows + [record("reviewer", "a") for _ in range(24)] + [record("reviewer", "b")]
    report = summarise(collapsed, {"category": ["a"] * len(collapsed)}, 1.0, 25, {})
    assert report["fields"]["category"]["by_route"]["reviewer"]["top_answer_share"] == round(24 / 25, 6)
    assert report["fields"]["category"]["by_route"]["probe"]["top_answer_share"] == round(1 / 3, 6)
    assert collapsed_routes(report) == ["category/reviewer (96% of 25 answers one label)"]
    # Varied answers, or too few of them to judge, are not a collapse; uncertain rows are not answers.
    varied = probe_rows + [record("reviewer", label) for label in ("a", "b") * 12]
    few = probe_rows + [record("reviewer", "a") for _ in range(10)] + [record("reviewer", "a", True) for _ in range(30)]
    for rows in (varied, few):
        assert collapsed_routes(summarise(rows, {}, 1.0, 1, {})) == []
