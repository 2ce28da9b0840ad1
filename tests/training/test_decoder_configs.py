"""Every configs/decoder/*.yaml runs a fast_dev_run with a tiny random decoder swapped in; the decoder
sequence classifier pools the last real token whatever the padding side and checkpoints only LoRA + head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fenlei.training.cli import run_lightning_cli
from tests.conftest import REPO_ROOT, make_rows, write_jsonl
from tests.decoder_support import make_tokenizer, write_tiny_decoder

DECODER_CONFIGS = sorted((REPO_ROOT / "configs" / "decoder").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_decoder(tmp_path_factory.mktemp("tiny_gemma_cfg"), "gemma3", seed=2)


@pytest.fixture(scope="module")
def field_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classification data plus an urgency field (configs may predict category + urgency)."""
    root = tmp_path_factory.mktemp("decoder_cfg_data")
    for split, n, seed in (("train", 32, 1), ("validation", 8, 2), ("test", 8, 3)):
        rows = make_rows(n, seed)
        for i, row in enumerate(rows):
            row["urgency"] = str(i % 4)  # the codes the configs' label_maps remap
            row["impact"] = str(i % 3)  # the third field of gemma3_270m_lora_fast.yaml
        write_jsonl(root / f"{split}.jsonl", rows)
    return root


def test_decoder_configs_exist():
    names = {p.name for p in DECODER_CONFIGS}
    assert {"functiongemma_270m_lora.yaml", "gemma3_270m_lora.yaml", "gemma3_270m_multifield.yaml",
            "smollm2_prefix.yaml", "gemma3_270m_seqcls.yaml"} <= names


@pytest.mark.parametrize("path", DECODER_CONFIGS, ids=lambda p: p.name)
def test_fast_dev_run_with_tiny_decoder(path: Path, tiny_decoder: Path, field_data: Path, tmp_path: Path) -> None:
    args = ["fit", "--config", str(path), "--config", str(REPO_ROOT / "configs/debug/fast_dev_run.yaml"),
            f"--model.init_args.pretrained={tiny_decoder}", f"--data.init_args.tokenizer={tiny_decoder}",
            f"--data.init_args.data_dir={field_data}", "--data.init_args.max_length=16",
            "--data.init_args.batch_size=4", f"--trainer.default_root_dir={tmp_path / 'run'}",
            "--trainer.accelerator=cpu", "--trainer.precision=32-true", "--wandb.mode=disabled"]
    cli = run_lightning_cli(args=args)
    assert cli.trainer.state.finished
    assert cli.model.hparams.num_classes == 4
    if path.stem.endswith("_fast"):  # the speed levers are on
        from datamodules.sampler import LengthGroupedSampler

        assert cli.trainer.optimizers[0].defaults["fused"] is True
        assert isinstance(cli.datamodule.train_dataloader().sampler, LengthGroupedSampler)
    assert cli.model.hparams.label_names == ["billing", "bug", "login", "shipping"]


def test_seqcls_left_and_right_padding_agree_and_checkpoint_is_adapter_only(tiny_decoder, tmp_path):
    from lightning_modules.decoder_seqcls import DecoderSequenceClassifier

    module = DecoderSequenceClassifier(pretrained=str(tiny_decoder), num_classes=3).eval()
    tok = make_tokenizer()
    texts = ["my card was charged twice", "login"]
    logits = {}
    for side in ("left", "right"):
        tok.padding_side = side
        enc = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits[side] = module(enc["input_ids"], enc["attention_mask"])
    with torch.no_grad():
        single = torch.cat([module(**{k: v for k, v in tok([t], return_tensors="pt").items()
                                      if k in ("input_ids", "attention_mask")}) for t in texts])
    torch.testing.assert_close(logits["right"], single, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits["left"], single, atol=1e-5, rtol=1e-5)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert any("score" in n for n in trainable) and any("lora_" in n for n in trainable)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == trainable and module.strict_loading is False
    with torch.no_grad():  # make the saved weights differ from a fresh module's (LoRA B and the head start at 0/random)
        for param in module.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                  "pytorch-lightning_version": "2.6.6"}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "seqcls.ckpt")
    reloaded = DecoderSequenceClassifier.load_from_checkpoint(tmp_path / "seqcls.ckpt").eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(enc["input_ids"], enc["attention_mask"]),
                                   module(enc["input_ids"], enc["attention_mask"]), atol=1e-5, rtol=1e-5)
