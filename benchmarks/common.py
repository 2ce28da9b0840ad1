"""Helpers shared by the benchmark scripts (run from the repository root as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_logged(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` in the repository root, offline, with its output in ``log``; return the wall seconds. A failure
    raises with the command and the log's tail, so a benchmark never goes on from a half-made step."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.run(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return time.perf_counter() - started


def positive_int(value: str) -> int:
    """argparse type for counts (rounds, requests, epochs, batch sizes, threads): an integer of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number
