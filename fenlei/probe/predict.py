"""``fenlei predict --probe DIR``: predict a file with a saved probe into ``DIR/predict/predictions.jsonl``.

    fenlei predict --probe runs/probe/endava                       # the probe's test file
    fenlei predict --probe runs/probe/endava --input new.jsonl --output new_predictions.jsonl

The output is what ``fenlei predict`` writes for a training run: one line per input row, in input order,
``{"row": N, "label", "predicted_label", "confidence", "uncertain", "top_k"}`` (probabilities to 6 digits, calibrated
with the probe's temperature; ``label`` is ``uncertain`` under its threshold). The probe directory is locked while
the command writes (``run.lock``), and the output is written atomically. The ``fenlei`` command sends ``predict``
here when the command line names ``--probe``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

from fenlei.errors import OptionError, exit_status_of


def predict(*, probe: str, input: Optional[str] = None, output: Optional[str] = None,
            batch_size: Optional[int] = None, top_k: int = 5, model: Optional[str] = None, device: str = "auto",
            num_threads: Optional[int] = None, quiet: bool = False) -> int:
    """Predict a file with a saved probe (``fenlei probe --run_dir DIR``).

    Args:
        probe: the probe's run directory
        input: JSONL or CSV/TSV file with the probe's text fields (default: the probe's test file)
        output: JSONL file to write (default: PROBE/predict/predictions.jsonl)
        batch_size: texts per extraction batch (default: the probe's)
        top_k: labels listed per row
        model: load the model from here instead of the name the probe records (its files must be the same:
            checked by sha256)
        device: extraction device: auto (GPU if torch sees one), cpu, cuda, cuda:1
        num_threads: torch threads
        quiet: no progress bar and no summary line
    """
    from fenlei.io import atomic_write_text
    from fenlei.probe.predictor import ProbePredictor
    from fenlei.probe.run import check_device, read_split
    from fenlei.probe.store import load_probe
    from fenlei.training.run_dir import RunDir

    check_device(device)
    if top_k < 1 or (batch_size is not None and batch_size < 1):
        raise OptionError("--top_k and --batch_size must be >= 1")
    saved = load_probe(probe)
    source = input or saved.test_file
    if not source:
        raise OptionError(f"--input: {probe} records no test file; name the file to predict")
    path = Path(source)
    if not path.is_file():
        raise OptionError(f"--input {source}: no such file")
    features = saved.features
    data = read_split(path, features["text_fields"], None, features.get("text_separator", " "), None,
                      features["max_length"])
    lock = RunDir(saved.folder).lock("predict")
    try:
        predictor = ProbePredictor(probe, model=model, device=device, num_threads=num_threads, progress=not quiet)
        probs = predictor.predict_proba(data.texts, batch_size)
        records = predictor.format_predictions(probs, top_k, digits=6)
        target = Path(output) if output else saved.predictions
        atomic_write_text(target, "".join(json.dumps({"row": i, **r}, ensure_ascii=False) + "\n"
                                          for i, r in enumerate(records)))
    finally:
        lock.release()
    if not quiet:
        print(f"predict: {len(records)} rows of {path} -> {target}", file=sys.stderr)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    from fenlei.typed_cli import run_typed

    return run_typed(predict, sys.argv[1:] if argv is None else argv, prog="fenlei predict --probe",
                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
