"""``fenlei export --format hf`` (fenlei.deploy.hf_export): a Hugging Face folder that transformers' Auto classes and
text-classification pipeline load with the run's labels and the run's own logits; the model card; the hub push
(offline: a dry run and a stand-in HfApi, never the network); the modules it refuses, in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fenlei.deploy.errors import ExportError
from tests.conftest import REPO_ROOT, fenlei_user_error, tiny_overrides
from tests.deploy_support import export_args

HF_FILES = {"config.json", "model.safetensors", "modeling_fenlei.py", "tokenizer.json", "tokenizer_config.json",
            "README.md", "fenlei_export.json"}
TEXTS = ["my refund payment card", "password login locked", "courier package late tracking",
         "screen crash error again", "help with my order today please"]
LONG = " ".join(["refund invoice charge package delivery"] * 20)  # > 32 tokens: truncation at the run's max_length


def _fenlei(argv: list[str]) -> int:
    from fenlei.commands import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", *argv])
    return int(exit_info.value.code)


def _module_logits(run: Any, texts: list[str]) -> np.ndarray:
    """The fenlei module's logits, tokenized as its run does (no transformers loading involved)."""
    import torch

    from datamodules.text_classification import PadCollator

    ids = run.encode(texts)
    batch = PadCollator(run.datamodule.tokenizer.pad_token_id or 0)([{"input_ids": r, "index": i} for i, r in enumerate(ids)])
    with torch.no_grad():
        return run.model(batch["input_ids"], batch["attention_mask"]).float().numpy()


def _pipeline_probs(classifier: Any, texts: list[str], labels: list[str]) -> np.ndarray:
    out = classifier(texts, top_k=None, truncation=True)
    assert all({d["label"] for d in row} == set(labels) for row in out)  # the run's label names, all of them
    return np.array([[next(d["score"] for d in row if d["label"] == name) for name in labels] for row in out])


def assert_folder_reproduces_run(folder: Path, run_path: str | Path, custom_code: bool = True) -> None:
    """AutoModelForSequenceClassification and the pipeline give the fenlei run's logits and probabilities."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from fenlei.training.run_dir import load_run

    run = load_run(run_path)
    labels = run.label_names
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(labels)}
    assert config["label2id"] == {name: i for i, name in enumerate(labels)}
    texts = [*TEXTS, LONG]
    reference = _module_logits(run, texts)
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=custom_code).eval()
    assert [model.config.id2label[i] for i in range(model.config.num_labels)] == labels
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=custom_code)
    enc = tokenizer(texts, truncation=True, padding=True, return_tensors="pt")
    assert enc["input_ids"].shape[1] == run.datamodule.max_length  # the long text was cut where training cut it
    with torch.no_grad():
        logits = model(**enc).logits.numpy()
    assert np.abs(logits - reference).max() < 1e-5
    classifier = pipeline("text-classification", model=str(folder), trust_remote_code=custom_code)
    probs = _pipeline_probs(classifier, texts, labels)
    np.testing.assert_allclose(probs, run.predict_proba(texts), atol=1e-5)  # what `fenlei predict` writes
    assert classifier(TEXTS[0])[0]["label"] == labels[int(reference[0].argmax())]


# ----------------------------------------------------------------------------------------------- encoders


def test_old_layout_run_exports_a_folder_transformers_loads(old_layout: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The layout_v0 run (mean pooling, linear head, tested): folder files, labels, logits, pipeline, model card."""
    assert _fenlei(["--format", "hf", "--quiet", "--ckpt_path", "runs/text", "--out", "hf"]) == 0
    assert "Hugging Face folder, 4 labels" in capsys.readouterr().err
    folder = old_layout / "hf"
    assert {p.name for p in folder.iterdir()} == HF_FILES
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "fenlei_encoder_classifier" and config["backbone"]["model_type"] == "bert"
    assert (config["pooling"], config["head"]) == ("mean", "linear")
    assert config["auto_map"] == {"AutoConfig": "modeling_fenlei.FenleiClassifierConfig",
                                  "AutoModelForSequenceClassification": "modeling_fenlei.FenleiEncoderClassifier"}
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 32
    assert_folder_reproduces_run(folder, "runs/text")

    # No silent fallback to a stock head: without trust_remote_code transformers refuses the folder.
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(ValueError, match="custom code"):
        AutoModelForSequenceClassification.from_pretrained(folder)

    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    assert "Data directory: `data`" in card and "| train | `data/train.jsonl` | 48 |" in card
    assert "| validation | `data/validation.jsonl` | 16 |" in card and "| test | `data/test.jsonl` | 16 |" in card
    assert "| billing | 12 | 4 | 4 |" in card  # label counts per split
    metrics = json.loads((old_layout / "runs/text/test/metrics.json").read_text())
    assert f"| test/f1_macro | {metrics['test/f1_macro']:.4f} |" in card and "| n_examples | 16 |" in card
    assert "`test/metrics.json` (`fenlei test --ckpt_path best-epoch01.ckpt`)" in card  # the checkpoint it tested
    assert "pooling: mean" in card and "class_path: lightning_modules.EncoderClassifier" in card
    assert "trust_remote_code=True" in card and "| billing | 1.0 |" in card  # per_class.md of the run's test
    export = json.loads((folder / "fenlei_export.json").read_text())
    assert export["format"] == "fenlei-hf" and export["labels"] == ["billing", "bug", "login", "shipping"]
    assert export["check"]["tokenizer_mismatches"] == 0 and export["check"]["max_abs_logit_diff"] < 1e-4
    assert export["splits"]["train"]["rows"] == 48 and export["test_metrics"] == metrics


def test_cls_pooling_and_mlp_head_are_exact(tmp_path: Path, tiny_model: Path, tiny_data: Path) -> None:
    """cls pooling (no BERT pooler) and the MLP head, which no stock *ForSequenceClassification computes."""
    from fenlei.deploy.export import export
    from fenlei.training.cli import run_lightning_cli

    run = tmp_path / "run"
    run_lightning_cli(args=["fit", "--config", str(REPO_ROOT / "configs" / "quickstart.yaml"),
                            *tiny_overrides(tiny_model, tiny_data, run), "--trainer.max_epochs=1",
                            "--trainer.limit_train_batches=2", "--trainer.precision=32-true",
                            "--model.init_args.pooling=cls", "--model.init_args.head=mlp",
                            "--model.init_args.head_hidden_size=24", "--model.init_args.head_lr=0.05",
                            "--trainer.enable_progress_bar=false"])
    from transformers.utils import HF_MODULES_CACHE

    modules = Path(HF_MODULES_CACHE) / "transformers_modules"
    before = set(modules.iterdir()) if modules.is_dir() else set()
    out = tmp_path / "hf"
    result = export(export_args("--format", "hf", "--ckpt_path", str(run), "--out", str(out)))
    assert result["check"]["texts"] == 16 and result["check"]["max_abs_logit_diff"] < 1e-4
    # The check's copy of the code (transformers keeps one per folder name) went with the temporary folder.
    assert not [p for p in set(modules.iterdir()) - before if "tmp_hyphen" in p.name]
    config = json.loads((out / "config.json").read_text())
    assert (config["pooling"], config["head"], config["head_hidden_size"]) == ("cls", "mlp", 24)
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        keys = set(weights.keys())
    assert {"head.0.weight", "head.3.weight"} <= keys and not any("pooler" in k for k in keys)
    assert_folder_reproduces_run(out, run)
    assert "no `test/metrics.json`" in (out / "README.md").read_text()


# ----------------------------------------------------------------------------------------------- refusals


def test_modules_that_do_not_map_are_refused_in_one_line(old_layout: Path, tiny_model: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    line = fenlei_user_error(["export", "--format", "hf", "--ckpt_path", "runs/numeric", "--out", "hf_num"], capsys)
    assert "lightning_modules.BinClassifier: not a text classifier over an encoder" in line
    assert not (old_layout / "hf_num").exists()

    from torch import nn

    from fenlei.deploy.hf_export import module_kind
    from lightning_modules import EncoderClassifier

    model = EncoderClassifier(pretrained=str(tiny_model), num_classes=3)
    assert module_kind(model, "EncoderClassifier") == "encoder"
    model.head = nn.Sequential(nn.Linear(32, 3), nn.Tanh())
    with pytest.raises(ExportError, match="its head is not fenlei's 'linear' head"):
        module_kind(model, "EncoderClassifier")

    class Scaled(EncoderClassifier):
        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return 2 * super().forward(input_ids, attention_mask)

    with pytest.raises(ExportError, match="overrides forward"):
        module_kind(Scaled(pretrained=str(tiny_model), num_classes=3), "Scaled")


@pytest.mark.parametrize(("argv", "message"), [
    (["--format", "hf", "--hf_model", "x", "--out", "o"], "--format hf exports a fenlei run (--ckpt_path)"),
    (["--format", "hf", "--ckpt_path", "runs/text", "--out", "o", "--dry_run"], "--dry_run: only with --push_to_hub"),
    (["--format", "hf", "--ckpt_path", "runs/text", "--out", "o", "--private"], "--private: only with --push_to_hub"),
    (["--format", "hf", "--ckpt_path", "runs/text", "--out", "o", "--push_to_hub", "a/b/c"],
     "--push_to_hub 'a/b/c': not a hub repository id"),
    (["--ckpt_path", "runs/text", "--out", "o", "--push_to_hub", "me/model"], "only with --format hf"),
    (["--hf_model", "bundle", "--data_dir", "data", "--out", "o"], "--hf_model bundle: a fenlei ONNX bundle"),
])
def test_bad_hf_options_are_one_line(old_layout: Path, argv: list[str], message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert message in fenlei_user_error(["export", *argv], capsys)
    assert not (old_layout / "o").exists()


# ----------------------------------------------------------------------------------------------- the hub


class FakeApi:
    """Stands in for huggingface_hub.HfApi: records the calls, touches no network."""

    calls: list[tuple[str, dict[str, Any]]] = []
    fail: bool = False

    def create_repo(self, repo_id: str, **kwargs: Any) -> None:
        FakeApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        if FakeApi.fail:
            raise OSError("Offline mode is enabled.\nmore")

    def upload_folder(self, **kwargs: Any) -> str:
        FakeApi.calls.append(("upload_folder", kwargs))
        return "https://huggingface.co/me/tickets/commit/abc"


def test_push_to_hub_dry_run_and_upload_offline(old_layout: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import huggingface_hub

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a dry run must not reach the hub")

    monkeypatch.setattr(huggingface_hub, "HfApi", no_network)
    assert _fenlei(["--format", "hf", "--quiet", "--ckpt_path", "runs/text", "--out", "hf", "--push_to_hub",
                    "me/tickets", "--dry_run"]) == 0
    printed = capsys.readouterr().out
    assert "dry run: would upload 7 files" in printed and "https://huggingface.co/me/tickets" in printed
    assert all(f"  {name}  " in printed for name in HF_FILES)
    # --overwrite replaces a --format hf folder (it is fenlei's), as it replaces a bundle.
    assert _fenlei(["--format", "hf", "--quiet", "--ckpt_path", "runs/text", "--out", "hf", "--overwrite"]) == 0

    from fenlei.deploy.export import HubOptions
    from fenlei.deploy.hf_export import push_to_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls = []
    result = push_to_hub(old_layout / "hf", HubOptions(repo_id="me/tickets", private=True), lambda m: None)
    assert [c[0] for c in FakeApi.calls] == ["create_repo", "upload_folder"]
    assert FakeApi.calls[0][1] == {"repo_id": "me/tickets", "repo_type": "model", "private": True, "exist_ok": True}
    assert FakeApi.calls[1][1]["folder_path"] == str(old_layout / "hf") and FakeApi.calls[1][1]["repo_id"] == "me/tickets"
    assert set(result["files"]) == HF_FILES and result["commit"].endswith("/commit/abc")
    FakeApi.fail = True
    try:
        with pytest.raises(ExportError, match=r"^--push_to_hub me/tickets: upload failed \(OSError: Offline mode is "
                                              r"enabled\.\); the folder is written at") as raised:
            push_to_hub(old_layout / "hf", HubOptions(repo_id="me/tickets"), lambda m: None)
        assert "\n" not in str(raised.value)
    finally:
        FakeApi.fail = False


# ----------------------------------------------------------------------------------------------- decoders


def test_decoder_sequence_classifier_exports_as_its_own_class(tmp_path: Path) -> None:
    """A LoRA decoder classifier: merged, saved as the architecture's *ForSequenceClassification, no custom code."""
    from fenlei.deploy.export import export
    from fenlei.training.cli import run_lightning_cli
    from tests.conftest import make_rows, write_jsonl
    from tests.decoder_support import write_tiny_decoder

    model = write_tiny_decoder(tmp_path / "tiny", "gemma3", seed=2)
    data = tmp_path / "data"
    for split, n, seed in (("train", 32, 1), ("validation", 16, 2)):
        write_jsonl(data / f"{split}.jsonl", make_rows(n, seed))
    run = tmp_path / "run"
    run_lightning_cli(args=["fit", "--config", str(REPO_ROOT / "configs/decoder/gemma3_270m_seqcls.yaml"),
                            f"--model.init_args.pretrained={model}", f"--data.init_args.tokenizer={model}",
                            f"--data.init_args.data_dir={data}", "--data.init_args.max_length=32",
                            "--data.init_args.batch_size=8", f"--trainer.default_root_dir={run}",
                            "--trainer.accelerator=cpu", "--trainer.precision=32-true", "--wandb.mode=disabled",
                            "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])
    out = tmp_path / "hf"
    result = export(export_args("--format", "hf", "--ckpt_path", str(run), "--out", str(out)))
    assert result["kind"] == "decoder" and result["check"]["max_abs_logit_diff"] < 1e-4
    assert not (out / "modeling_fenlei.py").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Gemma3TextForSequenceClassification"] and "auto_map" not in config
    assert json.loads((out / "tokenizer_config.json").read_text())["padding_side"] == "right"
    assert_folder_reproduces_run(out, run, custom_code=False)
