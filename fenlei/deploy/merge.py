"""``fenlei merge``: a LoRA generative classifier folded into a plain Hugging Face causal LM.

    fenlei merge --ckpt_path runs/NAME/checkpoints/best.ckpt --out merged/NAME

The output folder (written atomically) holds the merged ``AutoModelForCausalLM``, its tokenizer and the run's
``answer_spec.json``, so that the model runs without PEFT or fenlei's LightningModule.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from fenlei.errors import FenleiError


class MergeError(FenleiError, ValueError):
    """A checkpoint that cannot be merged (missing, or not a LoRA adapter)."""


def merge(ckpt_path: str, out: str) -> None:
    """Merged HF model (AutoModelForCausalLM) + tokenizer of a GenerativeClassifier checkpoint.

    Args:
        ckpt_path: checkpoint of a GenerativeClassifier fit
        out: output folder (written atomically)
    """
    from fenlei.deploy import staging
    from fenlei.training.checkpoints import WEIGHTS_ONLY, refusing_pickled_code
    from lightning_modules.generative_classifier import GenerativeClassifier

    if not Path(ckpt_path).is_file():
        raise MergeError(f"--ckpt_path {ckpt_path}: no such file")
    with refusing_pickled_code(ckpt_path):
        module = GenerativeClassifier.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=WEIGHTS_ONLY)
    try:
        merged = module.merged_model()
    except ValueError as err:  # a prefix-tuning adapter has no weights to fold in
        raise MergeError(str(err)) from None

    def write(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        module.tokenizer.save_pretrained(tmp)
        if module.hparams.get("answer_spec") is not None:
            (tmp / "answer_spec.json").write_text(json.dumps(module.hparams.answer_spec, ensure_ascii=False))

    # The export's lock and clean-up: a merge killed while writing or replacing leaves its temporary folder (a
    # whole model) or the folder it set aside; the next merge or export into the same parent settles both.
    target = Path(out)
    staging.clean_stale_temporaries(target.parent, lambda message: print(f"merge: {message}", file=sys.stderr))
    staging.locked_atomic_dir(target, write)
    print(f"fenlei: merged model written to {out}")


def main(argv: Sequence[str]) -> int:
    from fenlei.typed_cli import run_typed

    return run_typed(merge, argv, prog="fenlei merge")
