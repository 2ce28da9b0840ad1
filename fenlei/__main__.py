"""``python -m fenlei``: the same command as ``fenlei`` and ``python cli.py``."""

from fenlei.commands import main

if __name__ == "__main__":
    main()
