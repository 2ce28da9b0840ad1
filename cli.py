"""fenlei command line: ``python cli.py {fit,validate,test,predict} --config CONFIG.yaml [--config PRESET.yaml]``.

Kept thin and lazy: each subcommand imports only what it needs (importing lightning and transformers costs
seconds, which deployment commands must not pay).
"""

from __future__ import annotations

LIGHTNING_SUBCOMMANDS = {"fit", "validate", "test", "predict"}


def main(argv: list[str] | None = None) -> None:
    from fenlei.cli import run_lightning_cli


    run_lightning_cli(args=argv)


if __name__ == "__main__":
    main()
