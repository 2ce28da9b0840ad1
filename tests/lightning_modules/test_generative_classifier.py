"""Generative classifier on tiny random Llama / Gemma 3 models: prompts, answer-only loss, label scoring after
training (multi-token labels sharing a prefix, several fields), generation metrics, adapter checkpoints, merge."""

from __future__ import annotations

import json
import random
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from datamodules.prompt_classification import PromptClassificationDataModule, PromptCollator
from datamodules.readers import DataError
from fenlei.answers import AnswerSpec, parse_answer
from fenlei.commands import main as fenlei_main
from fenlei.deploy.merge import main as merge_main
from fenlei.training.callbacks import TestReportWriter
from lightning_modules.generative_classifier import GenerativeClassifier
from tests.conftest import CLASS_WORDS, write_jsonl
from tests.decoder_support import SIMPLE_CHAT_TEMPLATE, write_tiny_decoder

# "billing" and "shipping" become two-token labels that share their first token ("billing").
LABEL_MAPS = {"label": {"billing": "billing refund", "shipping": "billing invoice"}}
URGENCY = {"billing": "high", "bug": "high", "login": "low", "shipping": "low"}


def _rows(n: int, seed: int, words_per_class: int = 2) -> list[dict]:
    """Texts of one class word (+ a filler word): a constructed case that a random 2-layer LM with LoRA learns in
    a few dozen steps (long prompts need far more steps than a unit test can afford)."""
    rng = random.Random(seed)
    labels = list(CLASS_WORDS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        word = rng.choice(CLASS_WORDS[label][:words_per_class])
        rows.append({"text": f"{word} {rng.choice(['please', 'help', 'today'])}", "label": label,
                     "urgency": URGENCY[label]})
    return rows


@pytest.fixture(scope="module")
def prompt_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prompt_data")
    write_jsonl(root / "train.jsonl", _rows(32, 1))
    write_jsonl(root / "validation.jsonl", _rows(8, 2))
    write_jsonl(root / "test.jsonl", _rows(12, 3))
    return root


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_decoder(tmp_path_factory.mktemp("tiny_llama_gen"), "llama", seed=0)


def _dm(model: Path, data: Path, **kwargs) -> PromptClassificationDataModule:
    args = dict(tokenizer=str(model), data_dir=str(data), label_fields=["label", "urgency"],
                field_names={"label": "category"}, label_maps=LABEL_MAPS, batch_size=8)
    args.update(kwargs)
    return PromptClassificationDataModule(**args)


def test_labels_are_minus_100_exactly_on_prompt_and_padding(tiny_llama, prompt_data):
    dm = _dm(tiny_llama, prompt_data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    spec = dm.answer_spec
    for row in range(len(batch["index"])):
        prompt = batch["prompt_ids"][row][batch["prompt_mask"][row].bool()].tolist()
        answer = spec.answer_ids(batch["targets"][row].tolist())
        ids, mask, labels = batch["input_ids"][row], batch["attention_mask"][row], batch["labels"][row]
        n = int(mask.sum())
        assert ids[:n].tolist() == prompt + answer
        assert (labels[: len(prompt)] == -100).all() and (labels[n:] == -100).all()  # prompt and padding
        assert labels[len(prompt) : n].tolist() == answer  # every answer token is a target
        assert answer[-1] == dm.tokenizer.eos_token_id
    text = dm.tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert "category : billing invoice, billing refund, bug, login" in text  # allowed labels in the prompt


def test_lm_loss_equals_hf_loss_on_answer_tokens(tiny_llama, prompt_data):
    dm = _dm(tiny_llama, prompt_data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module = GenerativeClassifier(pretrained=str(tiny_llama)).eval()
    with torch.no_grad():
        ours = module.lm_loss(batch["input_ids"], batch["attention_mask"], batch["labels"])
        hf = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        # Changing a prompt token's target must not change the loss: only answer tokens count.
        assert torch.isclose(ours, hf, atol=1e-5)


def test_label_maps_multi_field_and_chat_template(tiny_llama, prompt_data, tmp_path):
    dm = _dm(tiny_llama, prompt_data)
    assert dm.field_labels == [["billing invoice", "billing refund", "bug", "login"], ["high", "low"]]
    assert dm.num_classes == 4 and dm.vocab_size is None and sum(dm.class_counts) == 32
    ids = dm.answer_spec.label_ids[0]
    assert ids[0][0] == ids[1][0] and len(ids[0]) == 2  # shared first token, two tokens each
    assert "< user >" not in dm.prompt_text("refund")
    chat_model = write_tiny_decoder(tmp_path / "chat", "llama", chat_template=SIMPLE_CHAT_TEMPLATE)
    chat = _dm(chat_model, prompt_data)
    assert chat.prompt_text("refund").startswith("<bos>< user >") and chat.prompt_text("refund").endswith("< model > ")
    assert "< user >" not in _dm(chat_model, prompt_data, use_chat_template="never").prompt_text("refund")
    with pytest.raises(DataError, match="label_maps"):
        _dm(tiny_llama, prompt_data, label_maps={"priority": {"1": "high"}})


def test_parse_answer():
    spec = AnswerSpec(["label", "urgency"], ["category", "urgency"], [["a b", "c"], ["high", "low"]], [[], []], [], [],
                      [[], []], None)
    assert parse_answer('{"category": "a b", "urgency": "low"} trailing', spec) == ["a b", "low"]
    assert parse_answer('category: "c", urgency: "zzz"', spec) == ["c", "zzz"]  # regex fallback
    assert parse_answer("no idea", spec) == [None, None]
    assert parse_answer('{ " category " : " a b ", " urgency " : " low " }', spec) == ["a b", "low"]  # spaced
    assert parse_answer('{"category": "c", "urgency": "lo', spec) == ["c", "lo"]  # cut off: regex fallback
    call = AnswerSpec(spec.fields, spec.names, spec.labels, [[], []], [], [], [[], []], None, "call", "route")
    assert parse_answer('route(category="a b", urgency="low") trailing', call) == ["a b", "low"]
    assert parse_answer('route ( category = " c " , urgency = " high " )', call) == ["c", "high"]  # spaced
    assert parse_answer('route(urgency="low")', call) == [None, "low"]  # a missing argument: a parse failure
    assert parse_answer('category="c", urgency="lo', call) == ["c", "lo"]  # no call, cut off: regex fallback
    assert parse_answer("no idea", call) == [None, None]


def _fit(model_dir: Path, data: Path, run_dir: Path, epochs: int, batch_size: int = 32,
         dm_kwargs: dict | None = None, **kwargs) -> tuple[GenerativeClassifier, pl.Trainer, PromptClassificationDataModule]:
    pl.seed_everything(0)
    # A short instruction: a random 2-layer model learns to attend to one text word within a few dozen steps.
    dm = _dm(model_dir, data, instruction="text : {text}", batch_size=batch_size, **(dm_kwargs or {}))
    module = GenerativeClassifier(pretrained=str(model_dir), num_classes=dm.num_classes, label_names=dm.label_names,
                                  lr=kwargs.pop("lr", 1e-2), warmup=0, max_new_tokens=24, **kwargs)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                                              monitor=None)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, default_root_dir=str(run_dir),
                         callbacks=[checkpoint, TestReportWriter()], enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=epochs)
    trainer.fit(module, dm)
    return module, trainer, dm


@pytest.fixture(scope="module")
def trained(tiny_llama, prompt_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gen_run")
    module, trainer, dm = _fit(tiny_llama, prompt_data, run_dir, epochs=40)
    return module, trainer, dm, run_dir


def test_training_beats_chance_and_reports_every_metric(trained):
    module, trainer, dm, run_dir = trained
    trainer.test(module, dm, verbose=False)
    results = module.compute_metrics("test")
    score = results["score"]
    assert score["fields"]["category"]["accuracy"] >= 0.6, score  # chance 0.25; incl. the two "billing ..." labels
    assert score["parse_failure_rate"] == 0 and score["hallucination_rate"] == 0
    gen = results["generate"]
    for key in ("accuracy", "f1_macro", "parse_failure_rate", "hallucination_rate", "examples_per_s"):
        assert key in gen and key in score
    assert gen["parse_failure_rate"] < 1.0  # the adapter learned the JSON format
    saved = json.loads((run_dir / "test" / "decoding_metrics.json").read_text())
    assert saved["score"]["fields"]["category"]["accuracy"] == score["fields"]["category"]["accuracy"]
    assert (run_dir / "test" / "per_class.csv").is_file()


def test_predict_writes_every_field(trained, tmp_path):
    """``predict`` writes one row per input row with the first field's label/top-k and every field's label and
    confidence, the same labels that label scoring picks in test."""
    from fenlei.training.callbacks import PredictionWriter

    module, _, dm, _ = trained
    trainer = pl.Trainer(accelerator="cpu", logger=False, default_root_dir=str(tmp_path), callbacks=[PredictionWriter()],
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(module, datamodule=dm)
    rows = [json.loads(line) for line in (tmp_path / "predict" / "predictions.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rows] == list(range(12))
    module.eval()
    dm.setup("test")
    choice = torch.cat([module.decode_score(b)[0] for b in dm.test_dataloader()])
    spec = dm.answer_spec
    for r, c in zip(rows, choice.tolist(), strict=True):
        assert set(r["fields"]) == {"category", "urgency"}
        assert r["fields"]["category"]["label"] == r["label"] == spec.labels[0][c[0]]
        assert r["fields"]["urgency"]["label"] == spec.labels[1][c[1]]
        assert 0 < r["fields"]["urgency"]["confidence"] <= 1


def _sequence_logp(model, ids: list[int], start: int) -> float:
    """Brute force: one forward over the whole sequence, summing log p of tokens ``start..``."""
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


def _constrained_logp(model, prefix: list[int], seq: list[int], siblings: list[list[int]]) -> float:
    """Brute force for label_normalisation="labels": each token's softmax over the tokens that continue some
    allowed value at that point."""
    total = 0.0
    with torch.no_grad():
        for t, tok in enumerate(seq):
            allowed = sorted({s[t] for s in siblings if len(s) > t and s[:t] == seq[:t]})
            logits = model(input_ids=torch.tensor([prefix + seq[:t]])).logits[0, -1].float()
            total += float(logits[allowed].log_softmax(-1)[allowed.index(tok)])
    return total


@pytest.mark.parametrize("normalisation", ["vocab", "labels"])
def test_multi_field_label_scoring_matches_brute_force(trained, normalisation):
    """Each field's scores equal log p(value + closing quote | prompt, earlier chosen values), computed by brute
    force on the full sequences (under constrained decoding for "labels"); two-token labels sharing their first
    token are separated correctly. The tree path (one forward per field) equals re-encoding per field."""
    module, _, dm, _ = trained
    module.eval()
    module.hparams["label_normalisation"] = normalisation
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    choice, scores = module.decode_score(batch)
    spec = dm.answer_spec
    for row in range(4):
        prompt = batch["prompt_ids"][row][batch["prompt_mask"][row].bool()].tolist()
        chosen: list[int] = []
        for k in range(len(spec.fields)):
            prefix = prompt + spec.prefix_ids(chosen + [0] * (len(spec.fields) - len(chosen)), k)
            seqs = spec.scored_ids(k)
            if normalisation == "vocab":
                want = torch.tensor([_sequence_logp(module.model, prefix + seq, len(prefix)) for seq in seqs])
            else:
                want = torch.tensor([_constrained_logp(module.model, prefix, seq, seqs) for seq in seqs])
            torch.testing.assert_close(scores[k][row].cpu(), want, atol=1e-4, rtol=1e-4)
            chosen.append(int(want.argmax()))
        assert choice[row].tolist() == chosen
    # The tree path (prompt encoded once, extended field by field) equals re-encoding the prompt per field.
    assert module._tree_path_ok(module._prompts(batch))
    per_choice, per_scores = module._decode_score_per_field(batch)
    module.hparams["label_normalisation"] = "vocab"
    assert torch.equal(per_choice, choice)
    for a, b in zip(per_scores, scores, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_shared_prompt_prefix_is_encoded_once_per_evaluation_and_exact(trained, tiny_llama, prompt_data):
    """The instruction shared by all prompts is encoded for the first batch and reused by later batches (the
    suffixes are left-padded after it, leaving masked holes); scores equal re-encoding each full prompt."""
    module = trained[0]
    module.eval()
    dm = _dm(tiny_llama, prompt_data)  # the default instruction: a long prefix common to every prompt
    dm.setup("test")
    data, collate = dm.datasets["test"], PromptCollator(dm.tokenizer.pad_token_id or 0)
    batches = [collate([data[i] for i in range(start, min(start + 5, len(data)))]) for start in range(0, len(data), 5)]
    assert len(batches) >= 2
    module.clear_prompt_cache()
    store = None
    for batch in batches:
        choice, scores = module.decode_score(batch)
        prompts = module._prompts(batch)
        ids = module._prefix_store[0]
        assert len(ids) >= module.MIN_SHARED_PREFIX and all(p[: len(ids)] == ids for p in prompts)
        if store is not None:
            assert module._prefix_store is store  # reused, not encoded again
        store = module._prefix_store
        per_choice, per_scores = module._decode_score_per_field(batch)
        assert torch.equal(per_choice, choice)
        for a, b in zip(per_scores, scores, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # A change of precision (or device) since the prefix was encoded: it is encoded again, not reused.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module.decode_score(batches[0])
    assert module._prefix_store is not store and module._prefix_store[2][1]
    # One row at a time (the service case): the first row's prefix is the row itself; from the second row on the
    # stored prefix is the instruction shared with the earlier rows, and it is reused.
    module.clear_prompt_cache()
    shared = store[0]
    for i in range(3):
        single = collate([data[i]])
        choice, scores = module.decode_score(single)
        if i >= 1:
            assert module._prefix_store[0] == shared
        per_choice, per_scores = module._decode_score_per_field(single)
        assert torch.equal(per_choice, choice)
        torch.testing.assert_close(per_scores[0], scores[0], atol=1e-4, rtol=1e-4)
    module.train()  # the weights may change from here on: the encoded prefix is dropped
    assert module._prefix_store is None
    module.eval()


def test_fit_end_adapter_holds_the_best_checkpoint_not_the_last_step(tiny_llama, prompt_data, tmp_path):
    """``<run>/adapter`` is written from the checkpoint callback's best checkpoint. The monitor here is chosen so
    that the best epoch is an early one (highest validation loss), which makes best and last differ."""
    from safetensors.torch import load_file

    pl.seed_everything(0)
    dm = _dm(tiny_llama, prompt_data, instruction="text : {text}", batch_size=32)
    module = GenerativeClassifier(pretrained=str(tiny_llama), num_classes=dm.num_classes, label_names=dm.label_names,
                                  lr=1e-2, warmup=0)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/loss", mode="max",
                                              save_top_k=1, filename="best-{epoch}")
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, default_root_dir=str(tmp_path),
                         callbacks=[checkpoint], enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(module, dm)
    assert checkpoint.best_model_path.endswith("best-epoch=0.ckpt")
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    source = json.loads((tmp_path / "adapter" / "source.json").read_text())
    assert source["checkpoint"] == checkpoint.best_model_path
    current = {k: v for k, v in module.state_dict().items() if "lora_" in k}
    assert len(saved) == len(best) == len(current) > 0
    for key, value in best.items():
        peft_key = key.removeprefix("model.").replace(".default.weight", ".weight")
        torch.testing.assert_close(saved[peft_key], value)
    assert any(not torch.equal(best[k], current[k]) for k in best)  # the last step's weights differ


def test_ddp_test_metrics_cover_the_whole_split(tiny_llama, prompt_data, tmp_path):
    """Two CPU processes (DDP, gloo) each decode half of the test split; the written metrics cover all of it."""
    dm = _dm(tiny_llama, prompt_data, batch_size=4)
    module = GenerativeClassifier(pretrained=str(tiny_llama), num_classes=dm.num_classes, label_names=dm.label_names,
                                  test_decoding=["score", "generate"], max_new_tokens=4)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, default_root_dir=str(tmp_path),
                         callbacks=[TestReportWriter()], enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.test(module, dm, verbose=False)
    saved = json.loads((tmp_path / "test" / "decoding_metrics.json").read_text())
    assert saved["score"]["num_examples"] == saved["generate"]["num_examples"] == 12  # 6 per process without gathering


def test_adapter_only_checkpoint_reload_and_merge_give_identical_logits(trained, tmp_path, capsys):
    module, _, dm, run_dir = trained
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["state_dict"] and all("lora_" in k for k in state["state_dict"])  # no frozen base weights
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    ids, mask = batch["prompt_ids"], batch["prompt_mask"]
    module.eval()
    with torch.no_grad():
        want = module(ids, mask)
        reloaded = GenerativeClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
        torch.testing.assert_close(reloaded(ids, mask), want, atol=1e-5, rtol=1e-5)
        assert reloaded.spec.labels == dm.field_labels
        base = GenerativeClassifier(pretrained=module.hparams.pretrained).eval()
        assert not torch.allclose(base(ids, mask), want, atol=1e-3)  # the adapter changed something
    dead = tmp_path / ".merged.tmp-killed1"  # what a merge killed by kill -9 leaves: its folder, the lock free
    dead.mkdir()
    (dead / ".fenlei-export.lock").touch()
    (dead / "model.safetensors").write_bytes(b"\0" * 1024)
    assert merge_main(["--ckpt_path", str(ckpt), "--out", str(tmp_path / "merged")]) == 0
    assert not dead.exists() and "removed" in capsys.readouterr().err
    assert not (tmp_path / "merged" / ".fenlei-export.lock").exists()
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        got = merged(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (got.argmax(-1) == want.argmax(-1)).all()
    with pytest.raises(SystemExit) as exit_info:  # a user error: one line and status 2 from the fenlei command
        fenlei_main(["merge", "--ckpt_path", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "nope.ckpt: no such file" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_gemma3_fit_and_score(method, prompt_data, tmp_path):
    """Gemma 3 (sliding-window layers) with LoRA, and prefix tuning (P-tuning v2; scored by the concat path)."""
    model_dir = write_tiny_decoder(tmp_path / "gemma", "gemma3", seed=1)
    module, trainer, dm = _fit(model_dir, prompt_data, tmp_path / "run", epochs=1, batch_size=8, peft_method=method,
                                  lr=1e-2, num_virtual_tokens=4, test_decoding=["score"])
    assert module.scoring_strategy == ("concat" if method == "prefix" else "kv_cache")
    trainer.test(module, dm, verbose=False)
    score = module.compute_metrics("test")["score"]
    assert score["num_examples"] == 12 and score["hallucination_rate"] == 0


@pytest.mark.parametrize("window", [16, 256])
def test_gemma3_tree_path_within_the_window_and_per_field_beyond_it(window, prompt_data, tmp_path):
    """Gemma 3's sliding-window layers: the one-forward-per-field tree path is taken only while prompt, label trees
    and continuations fit the window (the custom mask does not apply it); it then equals re-encoding per field
    under both normalisations, and decode_score falls back to that path beyond the window."""
    model_dir = write_tiny_decoder(tmp_path / "gemma", "gemma3", seed=1, sliding_window=window)
    module, _, dm = _fit(model_dir, prompt_data, tmp_path / "run", epochs=1, batch_size=8, lr=1e-2,
                         test_decoding=["score"])
    module.eval()
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert module._tree_path_ok(module._prompts(batch)) == (window == 256)
    for normalisation in ("labels", "vocab"):
        for length_normalise in (False, True):
            module.hparams["label_normalisation"] = normalisation
            module.hparams["length_normalise"] = length_normalise
            choice, scores = module.decode_score(batch)
            per_choice, per_scores = module._decode_score_per_field(batch)
            assert torch.equal(per_choice, choice)
            for a, b in zip(per_scores, scores, strict=True):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    module.hparams["label_normalisation"], module.hparams["length_normalise"] = "labels", False


def test_function_call_answers(tiny_llama, prompt_data, tmp_path):
    """answer_format=call: the answer is classify(category="...", urgency="..."); the default prompt asks for the
    call; training, label scoring (tree path = per-field path) and generation + parsing work as with JSON."""
    dm = _dm(tiny_llama, prompt_data, answer_format="call")
    assert "function call classify(...)" in dm.prompt_text("refund")
    spec = dm.answer_spec
    assert dm.tokenizer.decode(spec.answer_ids([1, 0]), skip_special_tokens=True) == \
        'classify ( category = " billing refund ", urgency = " high " )'
    assert parse_answer(dm.tokenizer.decode(spec.answer_ids([1, 0]), skip_special_tokens=True), spec) == [
        "billing refund", "high"]
    with pytest.raises(DataError, match="identifier"):
        _ = _dm(tiny_llama, prompt_data, answer_format="call", field_names={"label": "the category"}).answer_spec
    with pytest.raises(DataError, match="identifier"):
        _ = _dm(tiny_llama, prompt_data, answer_format="call", function_name="route me").answer_spec
    module, trainer, dm = _fit(tiny_llama, prompt_data, tmp_path / "run", epochs=60,
                               dm_kwargs={"answer_format": "call", "function_name": "classify"})
    trainer.test(module, dm, verbose=False)
    results = module.compute_metrics("test")
    assert results["score"]["fields"]["category"]["accuracy"] >= 0.6, results["score"]  # chance 0.25
    assert results["generate"]["parse_failure_rate"] < 1.0  # it learned to write the call
    module.eval()
    batch = next(iter(dm.test_dataloader()))
    assert module._tree_path_ok(module._prompts(batch))
    choice, scores = module.decode_score(batch)
    per_choice, per_scores = module._decode_score_per_field(batch)
    assert torch.equal(per_choice, choice)
    for a, b in zip(per_scores, scores, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_value_unseen_in_train_is_scored_wrong_and_left_out_of_the_loss(tiny_llama, prompt_data, tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [{"text": "refund please", "label": "billing", "urgency": "high"},
                                          {"text": "crash today", "label": "bug", "urgency": "critical"}])
    dm = _dm(tiny_llama, prompt_data, test_file=str(tmp_path / "test.jsonl"))
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    unseen = int((batch["targets"] == -1).any(1).nonzero()[0])
    assert batch["targets"][unseen].tolist()[1] == -1
    assert (batch["labels"][unseen] == -100).all() and (batch["labels"][1 - unseen] != -100).any()
    module = GenerativeClassifier(pretrained=str(tiny_llama)).eval()
    only_unseen = {k: v[unseen : unseen + 1] for k, v in batch.items()}
    assert float(module.lm_loss(only_unseen["input_ids"], only_unseen["attention_mask"], only_unseen["labels"])) == 0.0
