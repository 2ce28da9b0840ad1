"""Helpers shared by the benchmark scripts (run from the repository root as ``python benchmarks/NAME.py``).

Every script writes ``benchmarks/results/<name>.json`` with :func:`machine` in it (the CPU model and its
bf16/VNNI/AMX flags decide CPU figures). With ``--smoke`` a script is a plumbing check: tiny random models and
small data subsets from :func:`smoke_encoder`, :func:`smoke_decoder` and :func:`smoke_data` (built once under
``benchmarks/work/smoke/``), its results in ``benchmarks/results/smoke/`` marked ``"smoke": true``, never among
the real figures. ``benchmarks/run_all.py`` runs every script in one fixed order at either budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SMOKE_RESULTS = RESULTS / "smoke"
SMOKE_WORK = REPO / "benchmarks" / "work" / "smoke"
SHARED_DATA = REPO.parent / "shared" / "data"
# Set by benchmarks/run_all.py for its steps: the caller already holds /tmp/fenlei_cpu.lock (taking it again from
# a child would wait forever on the parent's lock).
LOCK_HELD_ENV = "FENLEI_CPU_LOCK_HELD"


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


def fit_then_test(run: Path, cli_args: list[str]) -> None:
    """``fenlei fit`` into ``run`` (resumed from its last.ckpt when a killed attempt left one; skipped once the run
    is finished), then ``fenlei test`` of the best checkpoint unless its test metrics exist; logs beside ``run``.
    ``cli_args`` are the options both commands share (configs, overrides, ``--trainer.default_root_dir=run``)."""
    from fenlei.training.run_dir import RunDir

    rd = RunDir(run)
    if not rd.is_finished():
        resume = ["--ckpt_path=last"] if rd.last_checkpoint.is_file() else []
        run_logged([sys.executable, "cli.py", "fit", *cli_args, *resume], run.parent / "fit.log")
    if not rd.test_metrics.is_file():
        run_logged([sys.executable, "cli.py", "test", *cli_args, "--ckpt_path=best"], run.parent / "test.log")


def over_seeds_stats(values: list[float]) -> dict[str, Any]:
    """Mean, min, max, spread (max - min), sample std and count of one figure over seeds; ``{"mean": None}`` when
    no seed has it."""
    if not values:
        return {"mean": None}
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "spread": max(values) - min(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def beyond_seed_range(gap: float, spreads: list[float], counts: list[int]) -> bool | None:
    """The test behind every "A differs from B" over seeds in these benchmarks: the gap between the two means is
    larger than the larger of their seed ranges (max - min). None while either side has fewer than 2 seeds: one
    seed has no spread, and a zero spread would answer the question falsely."""
    if min(counts) < 2:
        return None
    return bool(abs(gap) > max(spreads))


def positive_int(value: str) -> int:
    """argparse type for counts (rounds, requests, epochs, batch sizes, threads): an integer of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


# ---------------------------------------------------------------------------------------------------- records


def machine() -> dict[str, Any]:
    """What every results file records about the machine: platform, cores and ``fenlei.cpu.cpu_record`` (CPU model
    and which of its bf16/VNNI/AMX flags are present), under ``machine``."""
    from fenlei.cpu import cpu_record

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu": cpu_record()}


def results_dir(smoke: bool) -> Path:
    return SMOKE_RESULTS if smoke else RESULTS


# ---------------------------------------------------------------------------------------------------- service faults


def maximal_body(limits: dict[str, Any]) -> dict[str, Any]:
    """The largest /predict body the service admits (its /metadata ``limits``): max_items texts of max_chars each."""
    word = "refund my card please "
    text = (word * (limits["max_chars"] // len(word) + 1))[: limits["max_chars"]]
    return {"texts": [text] * limits["max_items"]}


def burst(url: str, body: dict[str, Any], clients: int, headers: dict[str, str] | None = None) -> tuple[dict[str, int], float]:
    """``clients`` threads POST ``body`` to ``url`` at once: how many got each outcome (a status code, with
    "+retry-after" when the header came, "timeout", or the transport error's name) and the seconds it took."""
    import threading

    import httpx

    outcomes: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            r = httpx.post(url, json=body, headers=headers or {}, timeout=90)
            outcome = f"{r.status_code}" + ("+retry-after" if "retry-after" in r.headers else "")
        except httpx.TimeoutException:
            outcome = "timeout"
        except httpx.HTTPError as err:
            outcome = type(err).__name__
        with lock:
            outcomes.append(outcome)

    started = time.perf_counter()
    threads = [threading.Thread(target=call) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {k: outcomes.count(k) for k in sorted(set(outcomes))}, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------- smoke inputs


def _build_once(directory: Path, write: Any) -> Path:
    """``write(tmp)`` into a temporary sibling renamed to ``directory``: a killed build leaves nothing half made."""
    if directory.is_dir():
        return directory
    from fenlei.io import atomic_dir

    atomic_dir(directory, write)
    return directory


def smoke_encoder() -> Path:
    """The tiny random BERT of the tests (hidden 32, 2 layers, a WordPiece vocabulary of the test words)."""
    from tests.conftest import write_tiny_model

    return _build_once(SMOKE_WORK / "models" / "encoder", write_tiny_model)


# Label fields of the decoder benchmarks' data: their values join the tiny decoder's words, so that two labels
# never tokenize alike (Chinese category names would all be <unk> otherwise, which the prompt data module refuses).
DECODER_LABEL_FIELDS = {"endava_tickets_partial": ("label", "urgency", "impact"),
                        "online_shopping_10_cats": ("label", "sentiment")}


def smoke_decoder() -> Path:
    """The tiny random Llama of the tests (hidden 32, 2 layers, a word-level vocabulary of the prompt words and the
    label values of the decoder benchmarks' data)."""
    from tests.decoder_support import write_tiny_decoder

    words: set[str] = set()
    for folder, fields in DECODER_LABEL_FIELDS.items():
        for line in (SHARED_DATA / folder / "train.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                words |= {str(row[f]) for f in fields if row.get(f) is not None}
    return _build_once(SMOKE_WORK / "models" / "decoder",
                       lambda tmp: write_tiny_decoder(tmp, extra_words=tuple(sorted(words))))


# name -> (folder under ../shared/data, rows per split file): the data subsets of the smoke runs, the first rows of
# each file taken round-robin over the labels (so that every label of a many-class set is in a small train file).
SMOKE_SUBSETS: dict[str, tuple[str, dict[str, int]]] = {
    "banking77": ("banking77", {"train": 4 * 77, "test": 77}),
    "clinc150": ("clinc150", {"train": 3 * 150, "validation": 150, "test": 150, "oos_validation": 20, "oos_test": 20}),
    "tnews": ("tnews_dataclue", {"train": 60, "validation": 30, "test": 30}),
}


def smoke_data(name: str) -> Path:
    """The smoke subset ``name`` of :data:`SMOKE_SUBSETS`, written once under ``benchmarks/work/smoke/data/<name>``."""
    folder, rows = SMOKE_SUBSETS[name]
    source = SHARED_DATA / folder

    def write(tmp: Path) -> None:
        for stem, count in rows.items():
            groups: dict[str, list[str]] = {}
            for line in (source / f"{stem}.jsonl").read_text(encoding="utf-8").splitlines():
                if line.strip():
                    groups.setdefault(str(json.loads(line).get("label")), []).append(line)
            picked: list[str] = []
            depth = 0
            while len(picked) < count and any(depth < len(g) for g in groups.values()):
                picked += [g[depth] for g in groups.values() if depth < len(g)][: count - len(picked)]
                depth += 1
            (tmp / f"{stem}.jsonl").write_text("".join(line + "\n" for line in picked), encoding="utf-8")

    return _build_once(SMOKE_WORK / "data" / name, write)


def smoke_fixtures() -> dict[str, Path]:
    """Every tiny model and data subset of the smoke runs (``run_all.py --budget smoke`` builds them first: its fit
    and export steps name them by path)."""
    return {"encoder": smoke_encoder(), "decoder": smoke_decoder(), **{name: smoke_data(name) for name in SMOKE_SUBSETS}}


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(REPO))  # tests/ and fenlei/ of this checkout
    for kind, path in smoke_fixtures().items():
        print(f"{kind}: {path.relative_to(REPO)}")
