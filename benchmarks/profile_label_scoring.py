"""Where label scoring's time goes: seconds per batch of label scoring (both normalisations), of each text's own
tokens alone (the floor every decoding pays) and of free generation, on the same adapter and batches; then the
torch profiler over one batch of label scoring.

Uses the subset and adapter written by ``benchmarks/decoder_classifiers.py`` (run that first)::

    flock /tmp/fenlei_cpu.lock .venv/bin/python benchmarks/profile_label_scoring.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import positive_int  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="endava", choices=["endava", "online_shopping"])
    p.add_argument("--model", default="packaged:gemma3-270m")
    p.add_argument("--max_length", type=int, default=48)
    p.add_argument("--batches", type=positive_int, default=4)
    p.add_argument("--batch_size", type=positive_int, default=8)
    p.add_argument("--threads", type=positive_int, default=2)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import load_peft_weights, set_peft_model_state_dict
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.decoder_classifiers import DATASETS
    from datamodules.prompt_classification import PromptClassificationDataModule
    from lightning_modules.generative_classifier import GenerativeClassifier
    from lightning_modules.label_scoring import _cache_kwarg

    torch.set_num_threads(args.threads)
    preset = DATASETS[args.dataset]
    work = preset["work"]
    dm = PromptClassificationDataModule(tokenizer=args.model, data_dir=str(work / "data"), val_file=None,
                                        label_fields=preset["fields"], field_names=preset["names"],
                                        max_length=args.max_length, batch_size=args.batch_size,
                                        eval_batch_size=args.batch_size)
    module = GenerativeClassifier(pretrained=args.model, num_classes=dm.num_classes, label_names=dm.label_names)
    set_peft_model_state_dict(module.model, load_peft_weights(str(work / "generative" / "adapter")))
    dm.setup("test")
    module.hparams["answer_spec"], module._tokenizer = dm.answer_spec.to_dict(), dm.tokenizer
    module.eval()
    batches = list(dm.test_dataloader())[: args.batches]
    module.decode_score(batches[0])  # encodes the shared prefix, warms up
    prompt_len = sum(len(p) for b in batches for p in module._prompts(b)) / sum(len(b["index"]) for b in batches)
    spec = module.spec
    for k, tree in enumerate(module._trees()):
        print(f"field {spec.names[k]}: {len(spec.label_ids[k])} values; label tree nodes fed: {len(tree)}")
    timings = {}
    for norm in ("labels", "vocab"):
        module.hparams.label_normalisation = norm
        module.decode_score(batches[0])
        start = time.perf_counter()
        for b in batches:
            module.decode_score(b)
        timings[norm] = (time.perf_counter() - start) / len(batches)
        print(f"label scoring ({norm} normalisation): {timings[norm]:.3f} s per batch of {args.batch_size}")
    # At batch 1 the first row's "shared prefix" is the row itself; from the second row on it is the instruction.
    print(f"mean prompt tokens {prompt_len:.1f}, shared prefix {len(module._prefix_store[0])} tokens")
    with torch.no_grad():  # the floor: each text's own tokens alone, in one forward after the shared prefix
        start = time.perf_counter()
        for b in batches:
            rows = [p + spec.openers[0] for p in module._prompts(b)]
            prefix, cache = module._shared_prefix(rows)
            cache.batch_repeat_interleave(len(rows))
            ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(r[len(prefix):]) for r in rows], batch_first=True,
                                                  padding_side="left")
            module.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{_cache_kwarg(module.model): cache})
        own = (time.perf_counter() - start) / len(batches)
    print(f"own text tokens only (one forward, no labels): {own:.3f} s per batch")
    start = time.perf_counter()
    for b in batches:
        module.decode_generate(b)
    gen = (time.perf_counter() - start) / len(batches)
    print(f"free generation: {gen:.3f} s per batch of {args.batch_size}")
    print(f"ratios to free generation: labels {gen / timings['labels']:.2f}x, vocab {gen / timings['vocab']:.2f}x, "
          f"own text tokens alone {gen / own:.2f}x")
    module.hparams.label_normalisation = "labels"
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        module.decode_score(batches[1 % len(batches)])
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))

if __name__ == "__main__":
    main()
