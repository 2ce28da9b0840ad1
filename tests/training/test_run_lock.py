"""The run directory's lock: one command writes into a run at a time, a dead holder never blocks, and a second
``fit`` exits 2 with one line naming the holder's pid (before it archives or writes anything)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fenlei.training.run_dir import LOCK_FILE, RunDir
from fenlei.training.run_lock import RunLockedError
from tests.conftest import REPO_ROOT, fenlei_user_error, tiny_overrides

QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")

# A process that takes the lock as fenlei does, says so, and holds it until its stdin closes.
HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from fenlei.training.run_dir import RunDir
    lock = RunDir(Path(sys.argv[1])).lock("fit")
    print("locked", flush=True)
    sys.stdin.read()
""")


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A run directory whose lock a live other process holds: ``(run_dir, holder pid)``."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield run_dir, proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def test_lock_records_the_holder_and_refuses_a_second_taker(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    lock = run.lock("fit")
    assert run.lock_file == tmp_path / "run" / LOCK_FILE
    assert run.lock_file.read_text() == f"{os.getpid()} fit\n"
    # flock belongs to an open file: the same process taking it again is refused too (in-process tests, sweeps).
    with pytest.raises(RunLockedError) as info:
        run.lock("test")
    message = str(info.value)
    assert "\n" not in message and f"pid {os.getpid()}, fit" in message and str(run.path) in message
    lock.release()
    with run.lock("test"):  # free again once released
        assert run.lock_file.read_text() == f"{os.getpid()} test\n"
    run.lock("fit").release()


def test_a_lock_file_of_a_dead_process_does_not_block(tmp_path: Path) -> None:
    """The kernel drops a flock when its process dies (kill -9 included); the file alone means nothing."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.lock_file.write_text("999999999 fit\n")  # a pid no process has
    killed = subprocess.run([sys.executable, "-c", HOLDER.replace("sys.stdin.read()", "import os, signal; "
                             "os.kill(os.getpid(), signal.SIGKILL)"), str(run.path)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -9
    with run.lock("fit"):
        assert run.lock_file.read_text() == f"{os.getpid()} fit\n"


def test_a_live_holder_in_another_process_is_named(holder: tuple[Path, int]) -> None:
    run_dir, pid = holder
    with pytest.raises(RunLockedError, match=rf"is in use by another fenlei command \(pid {pid}, fit\)"):
        RunDir(run_dir).lock("fit")


def test_lock_file_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        RunDir(tmp_path / "run").lock("fit").release()
    finally:
        os.umask(old)
    assert ((tmp_path / "run" / LOCK_FILE).stat().st_mode & 0o777) == 0o664


def test_second_fit_into_a_locked_run_exits_2_naming_the_pid_and_touches_nothing(
    holder: tuple[Path, int], tiny_model: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, pid = holder
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"the holder's")
    (run_dir / "metrics.csv").write_text("epoch,step\n0,0\n")
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    line = fenlei_user_error(["fit", "--config", QUICKSTART, *tiny_overrides(tiny_model, tiny_data, run_dir),
                              "--trainer.max_epochs=1"], capsys)
    assert f"{run_dir} is in use by another fenlei command (pid {pid}, fit)" in line, line
    # Refused before archiving: the holder's files stay where they are, nothing was added.
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == b"the holder's"
    for command in ("test", "predict"):  # the other commands that write into the run directory wait their turn too
        line = fenlei_user_error([command, "--config", QUICKSTART, *tiny_overrides(tiny_model, tiny_data, run_dir)],
                                 capsys)
        assert f"pid {pid}, fit" in line, line
