"""Where the export writes (fenlei.deploy.staging): --overwrite replaces only a bundle; the temporary folders of
killed exports are removed by the next export into the same parent, live ones never; the bundle records the
sha256 its loader checks. Exports run from the layout_v0 fixture run (no fit needed)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

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


# ---- the bundle that --overwrite sets aside (.NAME.old-*/NAME), when the export is killed while replacing it ----

_KILLED_REPLACE = """
import os, shutil, sys
from pathlib import Path
sys.path.insert(0, {root!r})
import fenlei.io
from fenlei.deploy.staging import ExportLock

kill_at, out = {kill_at!r}, Path({out!r})
calls = {{"replace": 0}}
real_replace = os.replace

def replace(src, dst):
    calls["replace"] += 1
    if kill_at == "before-set-aside" or (kill_at == "between-renames" and calls["replace"] == 2):
        os._exit(9)  # as kill -9: no clean-up runs, the kernel drops the lock
    real_replace(src, dst)

def rmtree(path, ignore_errors=False):
    if kill_at == "removing-old":
        os._exit(9)

fenlei.io.os.replace = replace
fenlei.io.shutil.rmtree = rmtree
lock = ExportLock()

def build(tmp):
    lock.take(tmp)
    (tmp / "metadata.json").write_text('{{"format": "fenlei-bundle", "created": "new"}}')

with lock.held(out):
    fenlei.io.atomic_dir(out, build)
"""


def _bundle(folder: Path, created: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"format": "fenlei-bundle", "created": created}))
    (folder / "model_int8.onnx").write_bytes(b"\0" * 64)
    return folder


def _killed_while_replacing(out: Path, kill_at: str) -> None:
    """Replace the bundle ``out`` in a process that dies (os._exit) at ``kill_at``, with the export's lock taken."""
    code = _KILLED_REPLACE.format(root=str(REPO_ROOT), kill_at=kill_at, out=str(out))
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 9


def _created(out: Path) -> str:
    return json.loads((out / "metadata.json").read_text())["created"]


@pytest.mark.parametrize(("kill_at", "kept"), [("before-set-aside", "old"), ("between-renames", "old"),
                                                ("removing-old", "new")])
def test_the_next_export_settles_what_a_killed_overwrite_left(tmp_path: Path, kill_at: str, kept: str) -> None:
    """Killed between the two renames, ``out`` is missing and the old bundle lies in .out.old-*/out: it is moved
    back (the export never finished). Killed before or after, the set-aside folder is removed."""
    out = _bundle(tmp_path / "out", "old")
    _killed_while_replacing(out, kill_at)
    left = sorted(p.name for p in tmp_path.iterdir())
    set_aside = [name for name in left if name.startswith(".out.old-")]
    assert len(set_aside) == 1 and len(set_aside[0]) == len(".out.old-") + 8, left
    assert out.exists() == (kill_at != "between-renames")
    messages: list[str] = []
    removed = clean_stale_temporaries(tmp_path, messages.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or set-aside folder left
    assert _created(out) == kept and LOCK_FILE not in os.listdir(out)
    assert tmp_path / set_aside[0] in removed and len(messages) == len(removed)
    if kill_at == "between-renames":
        assert any(m.startswith(f"restored {out}, which an export killed while replacing it") for m in messages)


def _hold(folder: Path) -> IO[bytes]:
    """The export's lock on ``folder`` as a running export holds it; closing the handle is the holder's death."""
    handle = (folder / LOCK_FILE).open("wb")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    return handle


def test_a_live_or_foreign_set_aside_folder_is_left_alone(tmp_path: Path) -> None:
    # A running export between its renames: the lock in its temporary folder is held.
    _bundle(tmp_path / ".live.old-abcd1234" / "live", "old")
    live = _hold(_dead_export_folder(tmp_path, ".live.tmp-efgh5678"))
    # A running export removing the old bundle after its rename: it holds the lock inside the new one.
    _bundle(tmp_path / ".done.old-abcd1234" / "done", "old")
    done = _hold(_bundle(tmp_path / "done", "new"))
    # Not what atomic_dir leaves: another shape, another name, or a name mkdtemp would not make.
    _bundle(tmp_path / ".a.old-abcd1234" / "b", "x")
    (tmp_path / ".c.old-abcd1234").mkdir()
    (tmp_path / ".c.old-abcd1234" / "notes.txt").write_text("mine")
    _bundle(tmp_path / ".d.old-abc" / "d", "x")
    _bundle(tmp_path / ".e.old-ABCD1234" / "e", "x")
    # No lock file anywhere (fenlei merge, exports from before the lock): removed only once clearly stale.
    young = _bundle(tmp_path / ".merged.old-young123" / "merged", "old").parent
    _bundle(tmp_path / "merged", "new")
    stale = _bundle(tmp_path / ".adapter.old-stale123" / "adapter", "old").parent
    long_ago = time.time() - UNLOCKED_STALE_SECONDS - 60
    os.utime(stale, (long_ago, long_ago))
    before = sorted(p.name for p in tmp_path.iterdir())

    messages: list[str] = []
    assert clean_stale_temporaries(tmp_path, messages.append) == [stale]
    assert (tmp_path / "adapter" / "metadata.json").is_file()  # its target was missing: restored
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({*before, "adapter"} - {stale.name})
    assert young.exists() and not (tmp_path / "live").exists()
    live.close()
    done.close()  # both holders die: what they left is now a dead export's
    clean_stale_temporaries(tmp_path, messages.append)
    assert _created(tmp_path / "live") == "old" and _created(tmp_path / "done") == "new"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".live.", ".done."))]


def test_a_restored_bundle_is_not_replaced_without_overwrite(old_layout: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The clean-up runs before the --out check: the bundle it moves back is what --out is checked against."""
    _bundle(old_layout / ".bundle_new.old-abcd1234" / "bundle_new", "old")
    _dead_export_folder(old_layout, ".bundle_new.tmp-efgh5678")
    line = fenlei_user_error(["export", "--quiet", "--ckpt_path", "runs/text", "--out", "bundle_new"], capsys)
    assert "bundle_new: already exists (pass --overwrite to replace it)" in line
    assert _created(old_layout / "bundle_new") == "old"
    assert not [p for p in old_layout.iterdir() if p.name.startswith(".bundle_new")]


def test_an_interrupted_replace_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process (Ctrl-C or a failed rename between the two renames), atomic_dir restores the old folder itself."""
    import fenlei.io

    class Interrupted(BaseException):
        pass

    out = _bundle(tmp_path / "out", "old")
    real_replace, calls = os.replace, []

    def replace(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise Interrupted
        real_replace(src, dst)

    monkeypatch.setattr(fenlei.io.os, "replace", replace)
    with pytest.raises(Interrupted):
        atomic_dir(out, lambda tmp: (tmp / "metadata.json").write_text("{}"))
    monkeypatch.undo()
    assert _created(out) == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
