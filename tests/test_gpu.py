"""GPU paths: the same tiny models and data as the CPU tests, run on CUDA and compared with the CPU.

Skipped where torch sees no GPU (CI, the 2-core dev machines). Run on a GPU machine with ``pytest -m gpu``.
What they catch: tensors created on the CPU inside model code (masks, positions, label ids, KV-cache slots),
bf16-mixed training on CUDA, and numerical differences between the two devices beyond float tolerance.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT, tiny_overrides

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_cli_fit_and_test_on_gpu_with_bf16(tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    """The quickstart config with the tiny model, through the CLI, on the GPU in bf16-mixed: fit, then test."""
    import json

    from fenlei.training.cli import run_lightning_cli

    run_dir = tmp_path / "run"
    gpu = ["--trainer.accelerator=gpu", "--trainer.devices=1", "--trainer.precision=bf16-mixed",
           "--trainer.max_epochs=4", "--model.init_args.lr=3e-3", "--model.init_args.head_lr=1e-2"]
    run_lightning_cli(args=["fit", "--config", str(REPO_ROOT / "configs" / "quickstart.yaml"),
                            *tiny_overrides(tiny_model, tiny_data, run_dir), *gpu])
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary, "run_summary.json is empty"
    best = sorted((run_dir / "checkpoints").glob("best*.ckpt"))
    assert best, "no best checkpoint written"
    ckpt = torch.load(best[0], map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_encoder_logits_match_between_gpu_and_cpu(tiny_model: Path) -> None:
    from lightning_modules import EncoderClassifier

    torch.manual_seed(0)
    model = EncoderClassifier(str(tiny_model), num_classes=4).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3, 0, 0], [2, 13, 14, 15, 16, 17, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        cpu = model(ids, mask)
        gpu = model.cuda()(ids.cuda(), mask.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.decoder_support import write_tiny_decoder

    return write_tiny_decoder(tmp_path_factory.mktemp("tiny_llama_gpu"), "llama", seed=0)


def _prompt_dm(model: Path, data: Path):
    from datamodules.prompt_classification import PromptClassificationDataModule

    return PromptClassificationDataModule(tokenizer=str(model), data_dir=str(data), label_fields=["label"],
                                          batch_size=8, max_length=16)


def test_generative_classifier_fits_on_gpu_and_scores_like_the_cpu(tiny_llama: Path, tiny_data: Path,
                                                                    tmp_path: Path) -> None:
    """LoRA fit on the GPU (bf16-mixed), then label scoring (shared-prefix KV cache path) and free generation on
    the GPU; the label scores equal the CPU's for the same weights."""
    import lightning.pytorch as pl

    from lightning_modules.generative_classifier import GenerativeClassifier

    pl.seed_everything(0)
    dm = _prompt_dm(tiny_llama, tiny_data)
    module = GenerativeClassifier(pretrained=str(tiny_llama), num_classes=dm.num_classes, label_names=dm.label_names,
                                  lr=1e-2, warmup=0, test_decoding=["score", "generate"], max_new_tokens=8)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/f1_macro", mode="max")
    trainer = pl.Trainer(max_epochs=2, accelerator="gpu", devices=1, precision="bf16-mixed", logger=False,
                         callbacks=[checkpoint], default_root_dir=str(tmp_path), enable_progress_bar=False,
                         num_sanity_val_steps=0)
    trainer.fit(module, dm)
    import json

    source = json.loads((tmp_path / "adapter" / "source.json").read_text())
    assert source["checkpoint"] == checkpoint.best_model_path  # adapter of the best checkpoint, saved from the GPU run
    trainer.test(module, dm, verbose=False)
    metrics = module.compute_metrics("test")
    assert set(metrics) == {"score", "generate"}
    assert metrics["score"]["parse_failure_rate"] == 0.0 and metrics["score"]["hallucination_rate"] == 0.0

    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    module.eval()
    on_gpu = {k: v.cuda() for k, v in batch.items()}
    choice_gpu, scores_gpu = module.cuda().decode_score(on_gpu)
    module.clear_prompt_cache()
    choice_cpu, scores_cpu = module.cpu().decode_score(batch)
    assert torch.equal(choice_gpu.cpu(), choice_cpu)
    torch.testing.assert_close(scores_gpu[0].cpu(), scores_cpu[0], atol=1e-3, rtol=1e-3)


def test_decoder_sequence_classifier_on_gpu(tiny_llama: Path) -> None:
    from lightning_modules.decoder_seqcls import DecoderSequenceClassifier

    module = DecoderSequenceClassifier(pretrained=str(tiny_llama), num_classes=3).eval()
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = (ids != 0).long()
    with torch.no_grad():
        cpu = module(ids, mask)
        gpu = module.cuda()(ids.cuda(), mask.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)


def test_probe_features_on_gpu_match_the_cpu(tiny_llama: Path) -> None:
    import numpy as np

    from fenlei.probe import features as feat
    from tests.decoder_support import make_tokenizer

    texts = ["my card was charged twice", "login", "the package is late again"]
    tok = make_tokenizer()
    cpu = feat.extract(feat.load_backbone(str(tiny_llama), "cpu"), tok, texts, 0.5, "mean", 32)
    gpu = feat.extract(feat.load_backbone(str(tiny_llama), "cuda"), tok, texts, 0.5, "mean", 32)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4, rtol=1e-4)
