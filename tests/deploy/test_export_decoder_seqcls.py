"""Export of a fenlei decoder sequence classifier (LoRA + score head) from its run directory: the LoRA weights are
merged before the ONNX export, the bundle's logits equal the unmerged checkpoint's, and the torch-free ``infer``
serves it like an encoder bundle, texts of mixed lengths batched together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tests.conftest import REPO_ROOT, make_rows, write_jsonl
from tests.decoder_support import write_tiny_decoder
from tests.torch_free import run_torch_free


def test_decoder_seqcls_run_exports_with_lora_merged(tmp_path: Path) -> None:
    from fenlei.deploy.export import main as export_main
    from fenlei.serving.predictor import BundlePredictor
    from fenlei.training.cli import run_lightning_cli
    from lightning_modules.decoder_seqcls import DecoderSequenceClassifier

    model = write_tiny_decoder(tmp_path / "tiny", "gemma3", seed=2)
    data = tmp_path / "data"
    data.mkdir()
    for split, n, seed in (("train", 32, 1), ("validation", 16, 2), ("test", 8, 3)):
        write_jsonl(data / f"{split}.jsonl", make_rows(n, seed))
    run = tmp_path / "run"
    run_lightning_cli(args=["fit", "--config", str(REPO_ROOT / "configs/decoder/gemma3_270m_seqcls.yaml"),
                            f"--model.init_args.pretrained={model}", f"--data.init_args.tokenizer={model}",
                            f"--data.init_args.data_dir={data}", "--data.init_args.max_length=16",
                            "--data.init_args.batch_size=8", f"--trainer.default_root_dir={run}",
                            "--trainer.accelerator=cpu", "--trainer.precision=32-true", "--wandb.mode=disabled",
                            "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"])
    bundle = tmp_path / "bundle"
    assert export_main(["--ckpt_path", str(run), "--out", str(bundle), "--force", "--quiet"]) == 0
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["source"]["lora_merged"] is True

    import onnx

    names = [t.name for t in onnx.load(str(bundle / "model_fp32.onnx")).graph.initializer]
    assert not any("lora" in n for n in names)  # folded into the base weights

    from transformers import AutoTokenizer

    ckpt = sorted((run / "checkpoints").glob("best*.ckpt"))[0]
    module = DecoderSequenceClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()  # LoRA unmerged
    tokenizer = AutoTokenizer.from_pretrained(model)
    predictor = BundlePredictor(bundle, "fp32")
    texts = [r["text"] for r in make_rows(6, seed=3)]
    wanted = []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=16, return_tensors="pt")
        with torch.no_grad():
            want = module(enc["input_ids"], enc["attention_mask"]).numpy()
        np.testing.assert_allclose(predictor.predict_logits([text], 1), want, atol=1e-4, rtol=1e-4)
        wanted.append(predictor.label_names[int(want.argmax())])

    # infer with torch, transformers and lightning blocked; one batch of all texts, padded to the longest.
    texts.append(texts[0] + " " + texts[1])
    wanted.append(predictor.label_names[int(predictor.predict_logits([texts[-1]], 1).argmax())])
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    out = tmp_path / "out.jsonl"
    run_torch_free(["infer", "--bundle", str(bundle), "--input", str(data), "--output", str(out), "--precision", "fp32",
                    "--batch_size", "8", "--no_progress", "true"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["predicted_label"] for r in rows] == wanted


