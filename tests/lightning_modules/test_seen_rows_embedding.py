"""embedding_rows: seen trains only the rows the training split reaches, with the result of training all rows."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from datamodules import TextClassificationDataModule
from lightning_modules import EncoderClassifier, StagedUnfreezing
from lightning_modules.seen_rows_embedding import SeenRowsEmbedding


def _fit(tiny_model: Path, tiny_data: Path, tmp_path: Path, rows: str, staged: bool = False,
         **model_kwargs) -> tuple[EncoderClassifier, pl.Trainer]:
    pl.seed_everything(7)
    dm = TextClassificationDataModule(tokenizer=str(tiny_model), data_dir=str(tiny_data), batch_size=8, max_length=32)
    # A large lr and weight decay make the decay of the rows no text contains visible in the comparison.
    model = EncoderClassifier(str(tiny_model), num_classes=dm.num_classes, lr=5e-2, head_lr=5e-2, weight_decay=0.5,
                              embedding_rows=rows, **model_kwargs)
    # Staged: embeddings frozen in epochs 0-1 (no decay either), thawed in epoch 2.
    callbacks = [StagedUnfreezing(stage1_epochs=1, gradual=True, layers_per_epoch=2)] if staged else []
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         gradient_clip_val=1.0, callbacks=callbacks, default_root_dir=str(tmp_path))
    trainer.fit(model, dm)
    return model, trainer


@pytest.mark.parametrize("staged", [False, True], ids=["plain", "staged_unfreezing"])
def test_same_weights_as_training_every_row(tiny_model: Path, tiny_data: Path, tmp_path: Path, staged: bool) -> None:
    every, _ = _fit(tiny_model, tiny_data, tmp_path / "all", "all", staged)
    seen, trainer = _fit(tiny_model, tiny_data, tmp_path / "seen", "seen", staged)
    reached = trainer.datamodule.train_token_ids()
    vocab = every.backbone.get_input_embeddings().num_embeddings
    assert 0 < len(reached) < vocab  # the tiny data leaves rows unread, so their decay is what is compared
    # After fit the stand-in is gone: the ordinary embedding, with the keys of the plain model.
    assert type(seen.backbone.get_input_embeddings()) is nn.Embedding
    a, b = every.state_dict(), seen.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=2e-6, rtol=1e-5, msg=key)
    # The rows were trained, and the unread ones decayed: neither equals the pretrained matrix.
    start = EncoderClassifier(str(tiny_model), num_classes=4).backbone.get_input_embeddings().weight
    end = seen.backbone.get_input_embeddings().weight
    unread = sorted(set(range(vocab)) - set(reached) - {0})
    assert not torch.allclose(end[reached[1:]], start[reached[1:]])
    assert torch.all(end[unread].norm(dim=1) < start[unread].norm(dim=1))


def test_state_dict_is_the_plain_embeddings(tiny_model: Path) -> None:
    model = EncoderClassifier(str(tiny_model), num_classes=4)
    plain = model.state_dict()
    stand_in = SeenRowsEmbedding(model.backbone.get_input_embeddings(), [2, 3, 10])
    model.backbone.set_input_embeddings(stand_in)
    with torch.no_grad():
        stand_in.trainable_rows += 1.0
    stand_in.pending_decay = 0.5
    saved = model.state_dict()
    assert saved.keys() == plain.keys()
    weight = saved["backbone.embeddings.word_embeddings.weight"]
    fresh = EncoderClassifier(str(tiny_model), num_classes=4)
    fresh.load_state_dict(saved)  # strict: a checkpoint written during fit loads into the ordinary model
    original = EncoderClassifier(str(tiny_model), num_classes=4).backbone.get_input_embeddings().weight
    torch.testing.assert_close(weight[[2, 3, 10]], original[[2, 3, 10]] + 1.0)
    torch.testing.assert_close(weight[[4, 5]], original[[4, 5]] * 0.5)
    # And loads back into a stand-in (a resumed fit), forward unchanged.
    ids = torch.tensor([[2, 4, 10, 3]])
    other = SeenRowsEmbedding(fresh.backbone.get_input_embeddings(), [2, 3, 10])
    other.load_state_dict({"weight": weight})
    torch.testing.assert_close(other(ids), stand_in(ids))


def test_padding_row_and_bad_ids(tiny_model: Path) -> None:
    embedding = nn.Embedding(10, 4, padding_idx=0)
    stand_in = SeenRowsEmbedding(embedding, [0, 1, 2])
    assert stand_in.rows.tolist() == [1, 2]  # the padding row is never trained, as in nn.Embedding
    with pytest.raises(ValueError, match="outside the vocabulary"):
        SeenRowsEmbedding(nn.Embedding(10, 4), [3, 12])


def test_needs_a_datamodule_with_token_ids(tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    from fenlei.errors import FenleiError

    class Plain(pl.LightningDataModule):
        def train_dataloader(self):  # pragma: no cover - never reached
            raise AssertionError

    model = EncoderClassifier(str(tiny_model), num_classes=4, embedding_rows="seen")
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=str(tmp_path))
    with pytest.raises(FenleiError, match="embedding_rows.*train_token_ids"):
        trainer.fit(model, Plain())
