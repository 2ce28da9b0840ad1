"""fenlei command line.

    python cli.py {fit,validate,test,predict} --config CONFIG.yaml [--config PRESET.yaml] ...   (LightningCLI)
    python cli.py data {dedup,mask,split,stats,oversample,augment} ...                        (data tools)
    python cli.py sweep SWEEP.yaml --count N [-- ARGS]        (local W&B-format sweeps; ops.sweep)
    python cli.py ablate SPEC.yaml                             (variants x seeds -> table + chart; ops.ablate)
    python cli.py compare RUN_OR_BUNDLE... --data FILE         (F1, top-k, latency, size; ops.compare)
    python cli.py al {select,merge} ...                        (active-learning queue; ops.active_learning)
    python cli.py export --ckpt_path CKPT --out BUNDLE         (ONNX fp32 + INT8 bundle, parity gate; deploy.export)
    python cli.py infer --bundle BUNDLE --input F --output F   (batch inference, torch-free; deploy.infer)
    python cli.py serve --bundle BUNDLE --host H --port P      (FastAPI service, torch-free; deploy.serve)
    python cli.py probe --model M --data_dir D [--layer 0.5]   (linear probe on frozen LM features; probe.run)
    python cli.py merge --ckpt_path CKPT --out DIR             (merge a LoRA generative classifier into an HF model)

Kept thin and lazy: each subcommand imports only what it needs (importing lightning and transformers costs
seconds, which deployment and data commands must not pay).
"""

from __future__ import annotations

import importlib
import sys

# Subcommands outside LightningCLI: name -> module with ``main(argv) -> int`` (imported only when used).
EXTRA_COMMANDS = {"data": "fenlei.data_tools", "sweep": "ops.sweep", "ablate": "ops.ablate", "compare": "ops.compare",
                  "al": "ops.active_learning", "export": "deploy.export", "infer": "deploy.infer", "serve": "deploy.serve",
                  "probe": "probe.run", "merge": "lightning_modules.generative_classifier"}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in EXTRA_COMMANDS:
        sys.exit(importlib.import_module(EXTRA_COMMANDS[args[0]]).main(args[1:]))

    from fenlei.cli import run_lightning_cli

    run_lightning_cli(args=argv)


if __name__ == "__main__":
    main()
