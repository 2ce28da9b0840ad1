"""``fenlei infer --probe DIR``: batch inference with a saved probe, in ``fenlei infer``'s formats.

    fenlei infer --probe runs/probe/endava --input tickets.jsonl --output predictions.jsonl

Input, output, malformed rows, cut texts, exit status and the atomic output file are those of ``fenlei infer
--bundle`` (``fenlei.serving.infer`` does the reading and writing; this module only supplies the predictor). The
difference is the model: a probe's features come from the frozen language model, run with torch and transformers
(``fenlei.probe.predictor``), so this route needs the training install, not the torch-free ``serve`` one. The
``fenlei`` command sends ``infer`` here when the command line names ``--probe``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from fenlei.errors import OptionError, exit_status_of


def infer(*, probe: str, input: str, output: str, text_field: Optional[list[str]] = None,
          keep_fields: Sequence[str] = ("id",), batch_size: Optional[int] = None, top_k: int = 5,
          threads: Optional[int] = None, no_progress: bool = False, max_chars: Optional[int] = None,
          model: Optional[str] = None, device: str = "auto") -> int:
    """Batch inference with a saved probe; returns 0, or 1 when some rows were malformed (the output is complete).

    Args:
        probe: the probe's run directory (written by `fenlei probe --run_dir`)
        input: JSONL or CSV/TSV file
        output: JSONL file to write (one line per input row)
        text_field: field(s) holding the text (default: the probe's training fields)
        keep_fields: input fields copied to the output
        batch_size: texts per extraction batch (default: the probe's)
        top_k: labels listed per row
        threads: torch threads
        no_progress: no progress bar
        max_chars: characters of each text kept before tokenizing (default: 32 per token of the probe's
            max_length); each cut row is named on stderr
        model: load the model from here instead of the name the probe records (same files: checked by sha256)
        device: extraction device: auto (GPU if torch sees one), cpu, cuda, cuda:1
    """
    from fenlei.probe.predictor import ProbePredictor
    from fenlei.probe.run import check_device
    from fenlei.serving.infer import check_files, predict_file

    input_path, output_path = Path(input), Path(output)
    check_files(input_path, output_path)
    check_device(device)
    if top_k < 1 or (batch_size is not None and batch_size < 1):
        raise OptionError("--batch_size and --top_k must be >= 1")
    if max_chars is not None and max_chars < 1:
        raise OptionError(f"--max_chars must be >= 1, got {max_chars}")
    predictor = ProbePredictor(probe, model=model, device=device, num_threads=threads)
    fields = list(text_field or predictor.metadata["text_fields"])
    return predict_file(predictor, input_path, output_path, fields, batch_size or predictor.batch_size, top_k,
                        keep_fields, not no_progress, max_chars)


def main(argv: Optional[list[str]] = None) -> int:
    from fenlei.typed_cli import run_typed

    return run_typed(infer, sys.argv[1:] if argv is None else argv, prog="fenlei infer --probe",
                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
