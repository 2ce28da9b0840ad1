"""fenlei.io.atomic_dir: a folder appears complete or not at all, and a failed write leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fenlei.io import atomic_dir


def _write(tmp: Path, text: str) -> str:
    (tmp / "a.txt").write_text(text)
    (tmp / "sub").mkdir()
    (tmp / "sub" / "b.txt").write_text(text)
    return text


def test_replaces_an_existing_folder_and_returns_the_result(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    assert atomic_dir(out, lambda tmp: _write(tmp, "one")) == "one"
    assert atomic_dir(out, lambda tmp: _write(tmp, "two")) == "two"
    assert (out / "a.txt").read_text() == "two" and (out / "sub" / "b.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary or set-aside folder left
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask  # not mkdtemp's private 0700
    assert ((out / "sub" / "b.txt").stat().st_mode & 0o777) == 0o666 & ~umask


def test_failed_write_keeps_the_old_folder_and_removes_the_temporary_one(tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    atomic_dir(out, lambda tmp: _write(tmp, "good"))

    def broken(tmp: Path) -> None:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_dir(out, broken)
    assert (out / "a.txt").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_atomic_files_get_the_mode_the_umask_gives(tmp_path: Path) -> None:
    """Not mkstemp's private 0600: labels, summaries and checkpoints are read by teammates and service accounts."""
    from fenlei.io import atomic_write_json, atomic_write_text

    old = os.umask(0o022)
    try:
        text, data = atomic_write_text(tmp_path / "a.txt", "x"), atomic_write_json(tmp_path / "b.json", {"k": 1})
        os.umask(0o077)
        private = atomic_write_text(tmp_path / "c.txt", "y")
    finally:
        os.umask(old)
    assert (text.stat().st_mode & 0o777) == (data.stat().st_mode & 0o777) == 0o644
    assert (private.stat().st_mode & 0o777) == 0o600


def test_the_umask_is_read_without_being_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting the umask to read it would, for that instant, give files other threads create (W&B's writer) mode
    0666; on Linux it is read from /proc/self/status instead."""
    from fenlei.io import current_umask, share_by_umask

    old = os.umask(0o027)
    try:
        def no_umask(mask: int) -> int:
            raise AssertionError("os.umask called")

        monkeypatch.setattr(os, "umask", no_umask)
        assert current_umask() == 0o027
        (tmp_path / "sub").mkdir(mode=0o700)
        private = tmp_path / "sub" / "weights.safetensors"
        private.write_bytes(b"x")
        private.chmod(0o600)  # as safetensors and mkstemp write
        outside = tmp_path / "outside.txt"
        outside.write_text("not the folder's")
        outside.chmod(0o600)
        (tmp_path / "sub" / "link").symlink_to(outside)
        share_by_umask(tmp_path / "sub")
        monkeypatch.undo()
    finally:
        os.umask(old)
    assert ((tmp_path / "sub").stat().st_mode & 0o777) == 0o750
    assert (private.stat().st_mode & 0o777) == 0o640
    assert (outside.stat().st_mode & 0o777) == 0o600  # a link is not followed out of the folder
