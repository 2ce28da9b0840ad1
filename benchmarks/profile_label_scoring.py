"""Where label scoring's time goes: torch profiler over one batch of the generative classifier's label scoring,
next to the seconds per batch of label scoring and of free generation (same adapter, same batches).

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
    prompt_len = sum(map(len, module._prompts(batches[0]))) / len(batches[0]["index"])
    print(f"mean prompt tokens {prompt_len:.1f}, shared prefix {len(module._prefix_store[0])} tokens")
    start = time.perf_counter()
    for b in batches:
        module.decode_score(b)
    print(f"label scoring: {(time.perf_counter() - start) / len(batches):.3f} s per batch of {args.batch_size}")
    start = time.perf_counter()
    for b in batches:
        module.decode_generate(b)
    print(f"free generation: {(time.perf_counter() - start) / len(batches):.3f} s per batch of {args.batch_size}")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        module.decode_score(batches[1])
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
