"""Decoder LMs as classifiers (issue 4): linear probe vs LoRA generative (label scoring and free generation) vs
LoRA sequence classification, all on the packaged gemma-3-270m, on Endava help-desk tickets (English; category,
urgency and impact as three fields) or on online_shopping_10_cats (Chinese reviews; category and sentiment).

    flock /tmp/fenlei_cpu.lock .venv/bin/python benchmarks/decoder_classifiers.py                    # Endava tickets
    flock /tmp/fenlei_cpu.lock .venv/bin/python benchmarks/decoder_classifiers.py --dataset online_shopping
    .venv/bin/python benchmarks/decoder_classifiers.py --smoke                          # plumbing check only

``--smoke``: the tiny random decoder of the tests (unless ``--model``), at most 40 train and 16 test texts cut to 16
tokens; results in ``benchmarks/results/smoke/<benchmark>.json`` (unless ``--out``), work under
``benchmarks/work/smoke/``.

Subset (this 2-core CPU cannot fine-tune a 270M decoder on all 4327 tickets in a session): a stratified sample
of ``--train_size`` train and ``--test_size`` test tickets (per category, seeded; ``datamodules.splits``), text cut
to ``--max_length`` tokens, ``--epochs`` epochs (default 1) for the two fine-tuned routes. The generative model predicts category, urgency and impact as one JSON
object; label scoring decodes the fields in order, each conditioned on the values chosen before it, and is run
twice: with constrained-decoding normalisation (the module default, ``label_scoring``) and with full-vocabulary
normalisation (``label_scoring_vocab``); the 5x target is checked for each (``target``, ``target_vocab``).
``--parts prefix`` adds prefix tuning of the same generative classifier (``--num_virtual_tokens`` key/value
prefixes per layer, ``--prefix_lr``; label scoring only: ``prefix_label_scoring``). ``--label_maps`` remaps label
values in the subset files, so every route sees the same fields (Endava's four urgency codes to three levels).
Each route records accuracy, macro-F1, the worst class's F1 and the most frequent answer's share per field.
Writes ``benchmarks/results/endava_tickets.json`` (atomically) after every route, with ``"complete": false`` until
the last one. A killed run resumes when started again with the same settings: finished routes are kept, and a route
cut short continues from its last epoch checkpoint (``<work>/<route>/checkpoints/last.ckpt``: adapter, optimizer,
loop and RNG states, so the epochs that follow are the ones an uninterrupted run trains); ``train_seconds`` sums
the finished epochs of every session. A run interrupted on another CPU, or ``--restart``, starts over.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import SMOKE_WORK, machine, positive_int, results_dir, smoke_decoder  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
WORK = ROOT / "benchmarks" / "work"
# Per dataset: folder, label fields (first = primary, stratifies the subset), their names in the prompt, results file,
# work folder (subset, adapter; Endava's keeps its first name, where the earlier runs live).
DATASETS: dict[str, dict[str, Any]] = {
    "endava": {"data": SHARED / "endava_tickets_partial", "fields": ["label", "urgency", "impact"],
               "names": {"label": "category", "urgency": "urgency", "impact": "impact"}, "benchmark": "endava_tickets",
               "work": WORK / "decoder_endava"},
    "online_shopping": {"data": SHARED / "online_shopping_10_cats", "fields": ["label", "sentiment"],
                        "names": {"label": "category", "sentiment": "sentiment"}, "benchmark": "online_shopping",
                        "work": WORK / "decoder_online_shopping"},
}

# The results key each route writes last: its presence marks the route finished.
ROUTE_KEYS = {"probe": "linear_probe", "generative": "generative_lora", "seqcls": "seqcls_lora",
              "prefix": "generative_prefix"}


def resume_decision(earlier: dict[str, Any], settings: dict[str, Any], cpu: dict[str, Any],
                    restart: bool) -> tuple[bool, str]:
    """Whether this run continues the one in its results file (``earlier``), and what to tell the user.

    Only an interrupted run (``"complete": false``) of the same settings on the same CPU is continued: finished
    routes are kept, a route cut short goes on from its last epoch checkpoint. A finished file is never resumed;
    a run from another CPU starts over, so that a speed figure summed over sessions names one CPU."""
    if restart or earlier.get("complete") is not False:
        return False, ""
    if earlier.get("settings") != settings:
        return False, "an interrupted run of other settings; starting over"
    if (earlier.get("machine") or {}).get("cpu") != cpu:
        return False, f"not resuming: it ran on another CPU ({(earlier.get('machine') or {}).get('cpu')}); starting over"
    done = [key for key in ROUTE_KEYS.values() if key in earlier]
    return True, f"resuming the interrupted run (finished: {', '.join(done) or 'none'})"


def stratified_subset(rows: list[dict], size: int, seed: int) -> list[dict]:
    from datamodules.splits import stratified_split

    if size >= len(rows):
        return rows
    _, picked = stratified_split([str(r["label"]) for r in rows], size / len(rows), seed)
    return [rows[i] for i in picked]


def remap(rows: list[dict], label_maps: dict[str, dict[str, str]]) -> list[dict]:
    """``label_maps`` ``{field: {raw value: new value}}`` applied to every row (the rule of the prompt DataModule's
    ``label_maps``: a raw value is matched as text; one the map does not name is kept)."""
    return [{**r, **{f: m.get(str(r[f]), r[f]) for f, m in label_maps.items() if r.get(f) is not None}} for r in rows]


def label_maps_arg(text: str) -> dict[str, dict[str, str]]:
    """``--label_maps``: a JSON object of objects, ``{field: {raw value: new value}}`` (values read as text)."""
    try:
        maps = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(maps, dict) or not all(isinstance(m, dict) for m in maps.values()):
        raise argparse.ArgumentTypeError('must be a JSON object of objects, {field: {raw value: new value}}')
    return {str(f): {str(k): str(v) for k, v in m.items()} for f, m in maps.items()}


def write_subset(data: Path, out: Path, train_size: int, test_size: int, seed: int,
                 label_maps: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    from fenlei.io import atomic_write_text

    info = {}
    for split, size in (("train", train_size), ("test", test_size)):
        rows = [json.loads(line) for line in (data / f"{split}.jsonl").read_text().splitlines() if line.strip()]
        sub = remap(stratified_subset(rows, size, seed), label_maps or {})
        atomic_write_text(out / f"{split}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sub))
        counts: dict[str, int] = {}
        for r in sub:
            counts[str(r["label"])] = counts.get(str(r["label"]), 0) + 1
        info[split] = {"rows": len(sub), "of": len(rows), "category_counts": dict(sorted(counts.items()))}
    return info


def probe_layer(value: str) -> int | float:
    """``"6"``: an index into hidden_states; ``"0.5"``: a fraction of depth (the probe's own rule)."""
    return float(value) if "." in value else int(value)


def run_probe(model: str, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from fenlei.probe.run import probe

    out: dict[str, Any] = {}
    fields, names = DATASETS[args.dataset]["fields"], DATASETS[args.dataset]["names"]
    for field in fields:  # the features are extracted once; the other two fields reuse the cache
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the probe prints its report; this script writes its own
            report = probe(model=model, data_dir=str(data_dir), label_field=field, layer=probe_layer(args.probe_layer),
                           pooling="mean", max_length=args.max_length, head=["logreg", "mlp"],
                           class_weight="balanced", batch_size=8)
        report["wall_seconds"] = round(time.perf_counter() - start, 2)
        out[names[field]] = report
    return out


def _trainer(run_dir: Path, args: argparse.Namespace) -> tuple[Any, Any]:
    """A trainer that writes ``run_dir/checkpoints/last.ckpt`` after every epoch (adapter, optimizer, loops and
    RNG states: fenlei's exact-resume callbacks), and its :class:`~fenlei.training.callbacks.EpochClock`."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fenlei.training.callbacks import AtomicCheckpointIO, EpochClock, RngStateCallback

    clock = EpochClock()
    last = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="last", monitor=None, save_top_k=1,
                           save_on_train_epoch_end=True, enable_version_counter=False)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, callbacks=[clock, RngStateCallback(), last],
                         plugins=[AtomicCheckpointIO()], default_root_dir=str(run_dir), enable_progress_bar=False,
                         limit_val_batches=0, num_sanity_val_steps=0, max_steps=args.max_steps or -1, log_every_n_steps=10)
    return trainer, clock


def fit_resuming(trainer: Any, module: Any, dm: Any, run_dir: Path, resume: bool) -> None:
    """``trainer.fit``, continued from ``run_dir/checkpoints/last.ckpt`` when this run resumes an interrupted one
    (the epochs already trained are not trained again); otherwise an earlier run's checkpoint is removed first."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and last.is_file():
        print(f"resuming {run_dir.name} from {last}", flush=True)
        trainer.fit(module, dm, ckpt_path=str(last))
        return
    last.unlink(missing_ok=True)
    trainer.fit(module, dm)


def run_generative(model: str, data_dir: Path, run_dir: Path, args: argparse.Namespace,
                   method: str = "lora", resume: bool = False) -> dict[str, Any]:
    """The generative classifier with a LoRA adapter (label scoring, both normalisations, and free generation) or
    prefix tuning (``method="prefix"``: label scoring only, at ``--prefix_lr``)."""
    from datamodules.prompt_classification import PromptClassificationDataModule
    from lightning_modules.generative_classifier import GenerativeClassifier

    fields, names = DATASETS[args.dataset]["fields"], DATASETS[args.dataset]["names"]
    dm = PromptClassificationDataModule(tokenizer=model, data_dir=str(data_dir), val_file=None,
                                        label_fields=fields, field_names=names, max_length=args.max_length,
                                        batch_size=args.batch_size, eval_batch_size=args.eval_batch_size)
    prefix = method == "prefix"
    module = GenerativeClassifier(pretrained=model, num_classes=dm.num_classes, label_names=dm.label_names,
                                  peft_method=method, lora_r=16, lora_alpha=16, num_virtual_tokens=args.num_virtual_tokens,
                                  lr=args.prefix_lr if prefix else args.lr, warmup=0.1,
                                  test_decoding=["score"] if prefix else ["score", "generate"],
                                  max_new_tokens=args.max_new_tokens)
    trainer, clock = _trainer(run_dir, args)
    adapter = run_dir / "adapter"
    previous: dict[str, Any] = {}
    if args.reuse_adapter and (adapter / "adapter_config.json").is_file():
        # Evaluate an adapter trained by an earlier run of this script (same subset and settings).
        from peft import load_peft_weights, set_peft_model_state_dict

        set_peft_model_state_dict(module.model, load_peft_weights(str(adapter)))
        key = "generative_prefix" if prefix else "generative_lora"
        previous = json.loads(Path(args.out).read_text()).get(key, {}) if Path(args.out).is_file() else {}
        train_seconds = previous.get("train_seconds")
    else:
        fit_resuming(trainer, module, dm, run_dir, resume)
        train_seconds = clock.seconds
        module.save_adapter(adapter)
    trainer.test(module, dm, verbose=False)  # label scoring (constrained-decoding normalisation) and generation
    results = module.compute_metrics("test")
    if not prefix:  # label scoring once more with full-vocabulary normalisation (log p under the LM; whole head)
        module.hparams.label_normalisation, module.hparams.test_decoding = "vocab", ["score"]
        trainer.test(module, dm, verbose=False)
        results["score_vocab"] = module.compute_metrics("test")["score"]
    prompt = dm.prompt_text("<text>")
    return {"results": results, "train_seconds": None if train_seconds is None else round(train_seconds, 1),
            "train_examples_per_s": round(args.epochs * len(dm.datasets["train"]) / train_seconds, 2) if "train" in dm.datasets else
            previous.get("train_examples_per_s"),
            "label_scoring_path": "the prompt prefix shared by all texts (instruction, allowed values) encoded once per "
                                  "test loop; then one forward per field: each text's remainder (for later fields: the "
                                  "chosen value's closing quote and the next field's opener) followed by the field's "
                                  "label tree under a 4-D attention mask",
            "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
            "field_labels": dict(zip([names[f] for f in fields], dm.field_labels, strict=True)),
            "prompt_template": prompt, "mean_prompt_tokens": round(sum(dm.datasets["test"].lengths) / len(dm.datasets["test"]), 1)}


def run_seqcls(model: str, data_dir: Path, run_dir: Path, args: argparse.Namespace, resume: bool = False) -> dict[str, Any]:
    import torch

    from datamodules.text_classification import TextClassificationDataModule
    from lightning_modules.decoder_seqcls import DecoderSequenceClassifier

    dm = TextClassificationDataModule(tokenizer=model, data_dir=str(data_dir), val_file=None,
                                      max_length=args.max_length, batch_size=args.batch_size,
                                      eval_batch_size=args.eval_batch_size)
    module = DecoderSequenceClassifier(pretrained=model, num_classes=dm.num_classes, label_names=dm.label_names,
                                       class_counts=dm.class_counts, lr=args.lr, warmup=0.1)
    trainer, clock = _trainer(run_dir, args)
    fit_resuming(trainer, module, dm, run_dir, resume)
    train_seconds = clock.seconds
    dm.setup("test")
    module.eval()
    preds, targets, seconds = [], [], 0.0
    with torch.no_grad():
        for batch in dm.test_dataloader():
            t0 = time.perf_counter()
            preds.append(module(batch["input_ids"], batch["attention_mask"]).argmax(-1))
            seconds += time.perf_counter() - t0
            targets.append(batch["labels"])
    from fenlei.probe.heads import classification_report

    p, t = torch.cat(preds).numpy(), torch.cat(targets).numpy()
    report = classification_report(t, p)
    report.update(examples_per_s=round(len(p) / seconds, 2), train_seconds=round(train_seconds, 1),
                  train_examples_per_s=round(args.epochs * len(dm.datasets["train"]) / train_seconds, 2),
                  note="test labels unseen in the train subset count as wrong")
    return report


def summarise(gen: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The decodings of one generative run under their results keys (``prefix``: "prefix_" for prefix tuning)."""
    out = {}
    for key, name in (("score", f"{prefix}label_scoring"), ("score_vocab", f"{prefix}label_scoring_vocab"),
                      ("generate", f"{prefix}free_generation")):
        res = gen["results"].get(key)
        if res is None:
            continue
        out[name] = {"accuracy": res["accuracy"], "f1_macro": res["f1_macro"],
                     "parse_failure_rate": res["parse_failure_rate"], "hallucination_rate": res["hallucination_rate"],
                     "examples_per_s": round(res["examples_per_s"], 3), "num_examples": res["num_examples"],
                     "fields": res["fields"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="endava")
    p.add_argument("--model", default=None, help="default packaged:gemma3-270m (--smoke: the tiny test decoder)")
    p.add_argument("--train_size", type=int, default=600)
    p.add_argument("--test_size", type=int, default=300)
    p.add_argument("--max_length", type=int, default=64, help="text tokens kept per ticket")
    p.add_argument("--batch_size", type=positive_int, default=8)
    p.add_argument("--eval_batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max_new_tokens", type=int, default=24)
    p.add_argument("--epochs", type=positive_int, default=1, help="training epochs of the generative and seq-cls routes")
    p.add_argument("--max_steps", type=int, default=0, help="cap on training steps (0: --epochs full epochs)")
    p.add_argument("--probe_layer", default="0.5")
    p.add_argument("--parts", nargs="+", default=["probe", "generative", "seqcls"],
                   choices=["probe", "generative", "seqcls", "prefix"],
                   help="routes to run (prefix: prefix tuning of the generative classifier, label scoring)")
    p.add_argument("--prefix_lr", type=float, default=1e-2, help="learning rate of the prefix-tuning route")
    p.add_argument("--num_virtual_tokens", type=positive_int, default=16, help="prefix length of the prefix-tuning route")
    p.add_argument("--label_maps", type=label_maps_arg, default=None,
                   help='JSON {field: {raw value: new value}} applied to the subset, e.g. Endava urgency to three '
                        'levels: \'{"urgency": {"0": "high", "1": "high", "2": "medium", "3": "low"}}\'')
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=None, help="results file (default benchmarks/results/<benchmark>.json)")
    p.add_argument("--work_dir", default=None, help="subset files and adapters (default benchmarks/work/decoder_<dataset>; "
                   "--smoke: under benchmarks/work/smoke/)")
    p.add_argument("--reuse_adapter", action="store_true", help="evaluate the adapter saved by an earlier run")
    p.add_argument("--restart", action="store_true", help="start over even where an interrupted run of the same "
                   "settings left finished routes and epoch checkpoints (by default they are resumed)")
    p.add_argument("--smoke", action="store_true", help="plumbing check: tiny decoder, tiny subset, results in "
                   "benchmarks/results/smoke/")
    args = p.parse_args()
    preset = DATASETS[args.dataset]
    unknown = sorted(set(args.label_maps or {}) - set(preset["fields"]))
    if unknown:
        p.error(f"--label_maps: field(s) {unknown} are not label fields of {args.dataset} {preset['fields']}")
    if args.smoke:
        args.model = args.model or str(smoke_decoder())
        args.train_size, args.test_size, args.max_length = min(args.train_size, 40), min(args.test_size, 16), min(args.max_length, 16)
    args.model = args.model or "packaged:gemma3-270m"
    args.out = args.out or str(results_dir(args.smoke) / f"{preset['benchmark']}.json")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lightning.pytorch as pl
    import torch

    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed)
    work = Path(args.work_dir) if args.work_dir else SMOKE_WORK / preset["work"].name if args.smoke else preset["work"]
    data_dir = work / "data"
    try:
        earlier = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        if args.reuse_adapter:
            p.error(f"--reuse_adapter: {args.out} is not a results file ({err})")
        print(f"{args.out}: not JSON ({err}); not resumed, it is overwritten", flush=True)
        earlier = {}
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "work_dir", "restart")}
    here = machine()
    resume, why = resume_decision(earlier, settings, here["cpu"], args.restart)
    if why:
        print(f"{args.out}: {why}", flush=True)
    previous = earlier if args.reuse_adapter or resume else {}
    result: dict[str, Any] = {**previous,
        "benchmark": preset["benchmark"], "model": args.model,
        "command": "flock /tmp/fenlei_cpu.lock .venv/bin/python benchmarks/decoder_classifiers.py " + shlex.join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "machine": here, "smoke": args.smoke,
        "settings": settings, "complete": False,
        "subset": write_subset(preset["data"], data_dir, args.train_size, args.test_size, args.seed, args.label_maps),
    }
    if args.reuse_adapter and previous.get("command"):  # the probe / seq-cls figures and the adapter came from it
        result["trained_by"] = previous.get("trained_by", previous["command"])
    out = Path(args.out)

    def save() -> None:
        from fenlei.io import atomic_write_text

        atomic_write_text(out, json.dumps(result, indent=1, ensure_ascii=False) + "\n")

    def pending(part: str) -> bool:
        return part in args.parts and not (resume and ROUTE_KEYS[part] in result)

    if pending("probe"):
        result["linear_probe"] = run_probe(args.model, data_dir, args)
        save()
    if pending("generative"):
        result["speed_note"] = (
            f"Speed: every decoding is timed batch by batch (batch {args.eval_batch_size}) in a test loop after "
            "training (label scoring with constrained-decoding normalisation and free generation in one loop, "
            "label scoring with full-vocabulary normalisation in a second). Label scoring encodes the prompt prefix "
            "that all texts share (instruction and allowed values) once per loop, then runs one forward per field "
            "over each text's own tokens (later fields: the chosen value's closing quote and the next opener) and "
            "the field's label tree; free generation runs greedy `model.generate` on each full prompt and parses "
            f"the JSON (at most {args.max_new_tokens} new tokens).")
        gen = run_generative(args.model, data_dir, work / "generative", args, resume=resume)
        result["generative_lora"] = {k: v for k, v in gen.items() if k != "results"}
        result.update(summarise(gen))
        definition = "label scoring >= 5x the examples/s of free generation at equal or better first-field accuracy"
        for key, target in (("label_scoring", "target"), ("label_scoring_vocab", "target_vocab")):
            if key in result and "free_generation" in result:
                ls, fg = result[key], result["free_generation"]
                speedup = ls["examples_per_s"] / max(fg["examples_per_s"], 1e-9)
                result[target] = {"speedup": round(speedup, 2),
                                  "accuracy_delta": round(ls["accuracy"] - fg["accuracy"], 4),
                                  "met": bool(speedup >= 5 and ls["accuracy"] >= fg["accuracy"]),
                                  "definition": definition}
        save()
    if pending("seqcls"):
        result["seqcls_lora"] = run_seqcls(args.model, data_dir, work / "seqcls", args, resume=resume)
        save()
    if pending("prefix"):
        gen = run_generative(args.model, data_dir, work / "prefix", args, method="prefix", resume=resume)
        result["generative_prefix"] = {k: v for k, v in gen.items() if k != "results"}
        result.update(summarise(gen, prefix="prefix_"))
        save()
    result["complete"] = True
    save()
    keys = ("label_scoring", "label_scoring_vocab", "free_generation", "prefix_label_scoring", "target", "target_vocab")
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
