"""Where the export writes (fenlei.deploy.staging): --overwrite replaces only a bundle; the temporary folders of
killed exports are removed by the next export into the same parent, live ones never; the bundle records the
sha256 its loader checks. Exports run from the layout_v0 fixture run (no fit needed)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fenlei.deploy.errors import ExportError
from fenlei.deploy.staging import LOCK_FILE, UNLOCKED_STALE_SECONDS, ExportLock, clean_stale_temporaries, replaceable
from fenlei.io import atomic_dir
from tests.conftest import REPO_ROOT, fenlei_user_error


def _export(*argv: str) -> None:
    from fenlei.commands import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--quiet", "--ckpt_path", "runs/text", *argv])
    assert exit_info.value.code == 0


def _dead_export_folder(parent: Path, name: str) -> Path:
    """What kill -9 leaves: a .NAME.tmp-* folder with its lock file, the lock free (its holder is gone)."""
    folder = parent / name
    folder.mkdir()
    (folder / LOCK_FILE).touch()
    (folder / "labels.json").write_text("[]")
    (folder / ".model_raw.onnx").write_bytes(b"\0" * 1024)
    return folder


def test_export_records_sha256_and_overwrite_replaces_only_a_bundle(old_layout: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from fenlei.serving.bundle_check import HASHED_FILES
    from fenlei.serving.predictor import BundlePredictor

    dead = _dead_export_folder(old_layout, ".bundle_new.tmp-dead1")
    _export("--out", "bundle_new")
    assert not dead.exists()  # removed by the next export into the same parent
    meta = json.loads((old_layout / "bundle_new" / "metadata.json").read_text())
    assert meta["format"] == "fenlei-bundle" and sorted(meta["sha256"]) == sorted(HASHED_FILES)
    assert all(not name.startswith(".") for name in os.listdir(old_layout / "bundle_new"))  # no lock file left
    assert BundlePredictor(old_layout / "bundle_new").info()["warnings"] == []
    assert not [p for p in old_layout.iterdir() if p.name.startswith(".bundle_new")]

    _export("--out", "bundle_new", "--overwrite")  # a bundle: replaced
    assert json.loads((old_layout / "bundle_new" / "metadata.json").read_text())["created"]

    mine = old_layout / "my_files"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    (mine / "metadata.json").write_text('{"format": "something else"}')
    line = fenlei_user_error(["export", "--quiet", "--ckpt_path", "runs/text", "--out", str(mine), "--overwrite"], capsys)
    assert "is not a fenlei bundle" in line and "nothing was deleted" in line
    assert (mine / "thesis.txt").read_text() == "years of work"
    assert not [p for p in old_layout.iterdir() if p.name.startswith(".my_files")]


def test_overwrite_check_is_made_again_before_the_rename(tmp_path: Path) -> None:
    """A folder that became a non-bundle during a long export is still not replaced (checked at rename time)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "metadata.json").write_text('{"format": "fenlei-bundle"}')
    replaceable(out)

    def write(tmp: Path) -> None:
        (tmp / "x").write_text("new")
        (out / "metadata.json").unlink()
        (out / "notes.txt").write_text("added meanwhile")

    with pytest.raises(ExportError, match="is not a fenlei bundle"):
        atomic_dir(out, write, before_replace=replaceable)
    assert (out / "notes.txt").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    replaceable(tmp_path / "missing")  # nothing there: nothing to protect
    empty = tmp_path / "empty"
    empty.mkdir()
    replaceable(empty)  # an empty folder holds nothing to lose
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        replaceable(tmp_path / "file")


def test_only_dead_exports_temporaries_are_removed(tmp_path: Path) -> None:
    dead = _dead_export_folder(tmp_path, ".a.tmp-dead")
    live = _dead_export_folder(tmp_path, ".b.tmp-live")
    lock = ExportLock()
    lock.take(live)  # held: a running export
    old_style = tmp_path / ".c.tmp-old"  # killed before exports took a lock: only removed once clearly stale
    old_style.mkdir()
    (old_style / "labels.json").write_text("[]")
    young_old_style = shutil.copytree(old_style, tmp_path / ".d.tmp-young")
    long_ago = time.time() - UNLOCKED_STALE_SECONDS - 60
    os.utime(old_style, (long_ago, long_ago))
    other = tmp_path / ".notes.tmp-x"  # someone else's hidden folder: not an export's
    other.mkdir()
    os.utime(other, (long_ago, long_ago))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    messages: list[str] = []
    removed = clean_stale_temporaries(tmp_path, messages.append)
    assert sorted(p.name for p in removed) == [".a.tmp-dead", ".c.tmp-old"] and len(messages) == 2
    assert not dead.exists() and not old_style.exists()
    assert live.exists() and young_old_style.exists() and other.exists() and bundle.exists()
    with lock.held(tmp_path / "bundle"):
        pass
    assert clean_stale_temporaries(tmp_path, messages.append) == [live]  # its holder let go


def test_a_killed_holders_folder_is_removed(tmp_path: Path) -> None:
    """kill -9 of the process holding the lock frees it (the kernel drops flock locks of dead processes)."""
    folder = tmp_path / ".bundle.tmp-k"
    folder.mkdir()
    code = (f"import sys, time; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
            "from pathlib import Path\nfrom fenlei.deploy.staging import ExportLock\n"
            f"lock = ExportLock(); lock.take(Path({str(folder)!r})); print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert clean_stale_temporaries(tmp_path, print) == [] and folder.exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert clean_stale_temporaries(tmp_path, print) == [folder] and not folder.exists()
    finally:
        proc.kill()
        proc.wait(timeout=10)
