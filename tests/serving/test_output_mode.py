"""`infer` writes its output through mkstemp (private 0600) and renames it into place: the file must still get the
mode the umask gives, like any file a plain open() creates (teammates read predictions on a shared server)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fenlei.serving.infer import main as infer_main
from tests.serving.serve_support import FIXTURE_BUNDLE


def test_infer_output_gets_the_mode_the_umask_gives(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "refund my card"}) + "\n", encoding="utf-8")
    modes = {}
    old = os.umask(0o022)
    try:
        for umask in (0o022, 0o007):
            os.umask(umask)
            out = tmp_path / f"out-{umask:o}.jsonl"
            assert infer_main(["--bundle", str(FIXTURE_BUNDLE), "--input", str(src), "--output", str(out),
                               "--no_progress"]) == 0
            modes[umask] = out.stat().st_mode & 0o777
    finally:
        os.umask(old)
    assert modes == {0o022: 0o644, 0o007: 0o660}
