"""fenlei's entry point: ``python cli.py COMMAND ...`` (the same as the installed ``fenlei`` command).

    python cli.py fit --config configs/focal_lert.yaml
    python cli.py --help          (every command, one line each)

The subcommand table lives in ``fenlei.commands``; this file stays thin so it imports nothing heavy.
"""

from fenlei.commands import main

if __name__ == "__main__":
    main()
