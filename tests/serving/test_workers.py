"""``fenlei serve --workers N`` (fenlei.serving.workers): N processes on one port with summed metrics, the
request-head timeout in every worker, SIGTERM, its own temporary metrics folder, and start-up failures that stop
the command instead of restarting workers forever."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fenlei.serving.serve import serve
from fenlei.serving.workers import STARTUP_FAILURE, factory_args, threads_per_session
from fenlei.typed_cli import parse_typed
from tests.conftest import REPO_ROOT, fenlei_user_error
from tests.serving.serve_support import FIXTURE_BUNDLE, connect, free_port, read_reply, status_of


def _metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else None


def _fenlei_serve(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TMPDIR": str(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "cli.py"), "serve", "--bundle", str(FIXTURE_BUNDLE),
                             "--log_level", "warning", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_factory_args_give_app_factory_the_same_options() -> None:
    options = parse_typed(serve, ["--bundle", "b dir", "--workers", "2", "--docs", "true", "--batch_wait_ms", "0.5",
                                  "--api_key_env", "KEY", "--port", "9"], prog="t")
    again = parse_typed(serve, ["--host", "::1", *shlex.split(factory_args(options))], prog="t")
    for name, value in options.items():
        if name not in ("host", "port", "workers"):
            assert again[name] == value, name
    assert "--port" not in factory_args(options) and "--threads" not in factory_args(options)  # None: the default


def test_threads_are_shared_out_over_workers_and_sessions() -> None:
    cores = len(os.sched_getaffinity(0))
    assert threads_per_session(3, 4, 2) == 3  # --threads wins
    assert threads_per_session(None, 2, 1) == max(1, cores // 2)
    assert threads_per_session(None, cores, 2) == 1


def test_workers_serve_one_port_with_summed_metrics_and_drain_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _fenlei_serve(["--port", str(port), "--workers", "2", "--header_timeout", "1"], tmp_path)
    try:
        deadline, text = time.monotonic() + 90, ""
        while time.monotonic() < deadline:  # both workers up and warm (the first may answer before the second is)
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                text = httpx.get(url + "/metrics", timeout=2).text
            except httpx.TransportError:
                text = ""
            if _metric(text, "fenlei_worker_processes") == 2 and _metric(text, "fenlei_ready") == 1:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"two ready workers not seen in time: {text[-500:]}")
        folders = list(tmp_path.glob("fenlei-metrics-*"))
        assert len(folders) == 1  # made by the parent (no PROMETHEUS_MULTIPROC_DIR given)
        sent = 0
        with httpx.Client(timeout=10) as client:
            while sent < 12 or (len({p.name.split("_")[-1] for p in folders[0].glob("counter_*.db")}) < 2
                                and sent < 400):
                r = client.post(url + "/predict", json={"texts": ["refund my card", "screen freeze"]},
                                headers={"connection": "close"})
                assert r.status_code == 200 and len(r.json()["predictions"]) == 2
                sent += 1
            text = client.get(url + "/metrics").text
        assert len({p.name.split("_")[-1] for p in folders[0].glob("counter_*.db")}) == 2  # both answered
        assert _metric(text, "fenlei_predictions_total") == 2 * sent  # summed over the workers
        # The request-head timeout holds in the workers too (their protocol class is named, not pickled).
        sock = connect(port)
        started = time.monotonic()
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\n")
        assert status_of(read_reply(sock)) == 408 and time.monotonic() - started < 5
        sock.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert not folders[0].exists()  # the temporary metrics folder is removed


def test_a_worker_that_cannot_start_stops_the_command(tmp_path: Path) -> None:
    proc = _fenlei_serve(["--port", str(free_port()), "--workers", "2", "--max_batch_texts", "0"], tmp_path)
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == STARTUP_FAILURE, err[-2000:]
    assert "fenlei: error: --max_batch_texts must be an integer >= 1, got 0" in err
    assert "Traceback" not in err


def test_workers_refuse_bad_options_and_bundles_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert "--workers must be an integer >= 1" in fenlei_user_error(
        ["serve", "--bundle", str(FIXTURE_BUNDLE), "--workers", "0"], capsys)
    line = fenlei_user_error(["serve", "--bundle", str(tmp_path / "missing"), "--workers", "2"], capsys)
    assert "no such bundle folder" in line
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(not_a_folder))
    line = fenlei_user_error(["serve", "--bundle", str(FIXTURE_BUNDLE), "--workers", "2"], capsys)
    assert "PROMETHEUS_MULTIPROC_DIR" in line and "not a folder" in line
