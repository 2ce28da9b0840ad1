"""The ``fenlei`` command: one table of subcommands, each imported only when it runs.

    fenlei {fit,validate,test,predict} --config CONFIG.yaml [--config PRESET.yaml] ...   (LightningCLI)
    fenlei export --ckpt_path runs/NAME --out bundles/NAME
    fenlei --help                                                                    (every command, one line each)

``python cli.py ...`` and ``python -m fenlei ...`` are the same command. Kept thin and lazy: importing lightning
and transformers costs seconds, which deployment and data commands must not pay, so nothing heavy is imported
here and each subcommand module is imported only when it is the one asked for.
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple

from fenlei.errors import exit_status_of


class Command(NamedTuple):
    module: str  # module with ``main(argv) -> int``; "" for the LightningCLI subcommands
    help: str
    # (option, module): a command line naming the option is run by that module instead. A saved probe given to
    # predict or infer (``--probe DIR``) needs torch and the probe's own loader; the bundle route of ``infer`` stays
    # torch-free and LightningCLI never sees an option it does not know.
    routes: tuple[tuple[str, str], ...] = ()


LIGHTNING = ""
COMMANDS: dict[str, Command] = {
    "fit": Command(LIGHTNING, "train a model from a config (LightningCLI); --ckpt_path last resumes a killed run"),
    "validate": Command(LIGHTNING, "run the validation loop of a config on a checkpoint"),
    "test": Command(LIGHTNING, "test a checkpoint (--ckpt_path best) and write the run's test/ report"),
    "predict": Command(LIGHTNING, "predict a file with a checkpoint into the run's predict/predictions.jsonl "
                                  "(--probe DIR: with a saved probe)", routes=(("--probe", "fenlei.probe.predict"),)),
    "data": Command("fenlei.data.tools", "data tools: dedup, mask, split, stats, oversample, augment, leakage, noise (no torch)"),
    "sweep": Command("fenlei.ops.sweep", "run a W&B-format sweep file locally, one run directory per trial"),
    "ablate": Command("fenlei.ops.ablate", "run an ablation spec (variants x seeds) into a table and a chart"),
    "compare": Command("fenlei.ops.compare", "compare runs and bundles on one data file: F1, top-k, latency, size"),
    "report": Command("fenlei.ops.report", "static HTML report of runs: curves, reliability, confusions, errors"),
    "al": Command("fenlei.ops.active_learning", "active learning: select uncertain pool rows, merge labels back"),
    "export": Command("fenlei.deploy.export", "export a run to an ONNX fp32 + INT8 bundle behind a parity gate"),
    "infer": Command("fenlei.serving.infer", "batch inference with a bundle over JSONL/CSV files (no torch; --probe "
                                             "DIR: a saved probe, with torch)", routes=(("--probe", "fenlei.probe.infer"),)),
    "serve": Command("fenlei.serving.serve", "serve a bundle over HTTP with FastAPI (no torch)"),
    "probe": Command("fenlei.probe.run", "linear probe on frozen language-model features, swept over layers and saved"),
    "cascade": Command("fenlei.probe.cascade_command", "a saved probe answers what it is sure of, a generative "
                                                      "classifier reviews the rest, uncertain under its threshold"),
    "merge": Command("fenlei.deploy.merge", "merge a LoRA generative classifier into an HF model"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: fenlei COMMAND [options]   (also: python cli.py, python -m fenlei)", "", "commands:"]
    lines += [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    lines += ["", "fenlei COMMAND --help shows a command's options and their defaults."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if args else 2)
    if args[0] in ("-V", "--version"):
        from fenlei import __version__

        print(f"fenlei {__version__}")
        sys.exit(0)
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"fenlei: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    sys.exit(exit_status_of(lambda: run_command(command, args, lightning_argv=None if argv is None else args)))


def routed_module(command: Command, argv: list[str]) -> str:
    """The module that runs ``argv``: the command's own, or a route's whose option ``argv`` names."""
    for option, module in command.routes:
        if any(word == option or word.startswith(option + "=") for word in argv):
            return module
    return command.module


def run_command(command: Command, args: list[str], lightning_argv: list[str] | None) -> int | None:
    module = routed_module(command, args[1:])
    if module:
        return importlib.import_module(module).main(args[1:])
    from fenlei.training.cli import run_lightning_cli

    # None lets LightningCLI read sys.argv itself (it warns when given both an args list and a command line).
    run_lightning_cli(args=lightning_argv)
    return 0
