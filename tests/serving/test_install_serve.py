"""``pip install "fenlei[serve]"`` is torch-free and enough for ``fenlei infer`` and ``fenlei serve``.

A fresh virtual environment (no system site-packages) gets the package from this checkout's source with only the
serve extra; torch, Lightning and transformers must then be missing, and the installed ``fenlei`` command (run
outside the checkout, so nothing from the source tree is imported) predicts with a bundle exported in the test
environment: ``infer`` over a small JSONL file, ``serve`` on a free loopback port for one ``/predict`` request.
The install reads the package index as pip is configured on the machine; every step has a time limit.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, write_jsonl
from tests.deploy_support import tiny_bundle

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "fenlei", "datamodules", "lightning_modules", "losses")
TRAINING_STACK = ("torch", "lightning", "pytorch_lightning", "transformers", "torchmetrics", "scipy", "sklearn")
TYPED_COMMAND = '''
import sys

from fenlei.typed_cli import run_typed


def infer(bundle: str, top_k: int = 5, no_progress: bool = False) -> int:
    """Predict.

    Args:
        bundle: folder written by fenlei export
        top_k: labels listed per text
        no_progress: no progress bar
    """
    print(bundle, top_k, no_progress)
    return 0


sys.exit(run_typed(infer, sys.argv[1:], prog="fenlei infer"))
'''
TEXTS = ["refund my card please", "the courier is late again", "screen freeze crash", "password reset help"]


def _env() -> dict[str, str]:
    """The environment minus anything that would point the venv's Python at the checkout or the test venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["COLUMNS"] = "200"  # help text on one line per option
    return env


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``<copy of this checkout>[serve]`` installed (a copy: the build writes into its source)."""
    root = tmp_path_factory.mktemp("serve_install")
    src = root / "src"
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root, timeout=120)
    python = venv / "bin" / "python"
    # The pip that ensurepip bundles may predate the metadata this package's build writes (PEP 639 license fields).
    _run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], cwd=root, timeout=300)
    _run([str(python), "-m", "pip", "install", "-q", f"{src}[serve]"], cwd=root, timeout=600)
    return venv


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_data: Path) -> Path:
    return tiny_bundle(tmp_path_factory, tiny_model, tiny_data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def _post(url: str, body: dict, timeout: float) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def test_serve_install_is_torch_free(serve_venv: Path, tmp_path: Path) -> None:
    python = serve_venv / "bin" / "python"
    code = ("import importlib.util, json, fenlei; print(json.dumps({'file': fenlei.__file__, 'found': "
            f"[m for m in {TRAINING_STACK!r} if importlib.util.find_spec(m) is not None]}}))")
    out = json.loads(_run([str(python), "-c", code], cwd=tmp_path, timeout=60).stdout)
    assert out["found"] == [], f"the serve install brought in {out['found']}"
    assert Path(out["file"]).is_relative_to(serve_venv), f"fenlei imported from {out['file']}, not the venv"
    for module in ("onnxruntime", "tokenizers", "numpy", "fastapi", "uvicorn", "jsonargparse", "prometheus_client"):
        _run([str(python), "-c", f"import {module}"], cwd=tmp_path, timeout=60)
    version = _run([str(serve_venv / "bin" / "fenlei"), "--version"], cwd=tmp_path, timeout=60).stdout
    assert version.startswith("fenlei ")
    # Typed options (fenlei.typed_cli: jsonargparse with docstring help), which infer and serve move to, work here.
    script = tmp_path / "typed.py"
    script.write_text(TYPED_COMMAND, encoding="utf-8")
    typed = _run([str(python), str(script), "--bundle", "b", "--top_k", "3", "--no_progress"], cwd=tmp_path, timeout=60)
    assert typed.stdout.split() == ["b", "3", "True"]
    helped = _run([str(python), str(script), "--help"], cwd=tmp_path, timeout=60)
    assert "folder written by fenlei export" in helped.stdout


def test_installed_fenlei_infers_with_a_bundle(serve_venv: Path, bundle: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(TEXTS)])
    out = tmp_path / "out" / "predictions.jsonl"
    _run([str(serve_venv / "bin" / "fenlei"), "infer", "--bundle", str(bundle), "--input", str(data),
          "--output", str(out), "--no_progress"], cwd=tmp_path, timeout=120)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["predicted_label"] == "billing"
    assert all(set(r) >= {"line", "label", "predicted_label", "confidence", "uncertain", "top_k"} for r in rows)


def test_installed_fenlei_serves_a_bundle(serve_venv: Path, bundle: Path, tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(serve_venv / "bin" / "fenlei"), "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
                             "--port", str(port), "--log_level", "warning"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = _get(f"{base}/health", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        if health is None:
            proc.kill()
            _, stderr = proc.communicate(timeout=10)
            pytest.fail(f"fenlei serve did not answer /health within 60 s (exit {proc.returncode}):\n{stderr[-4000:]}")
        assert health == (200, {"status": "ok", "labels": 4, "precision": "int8"})
        status, body = _post(f"{base}/predict", {"texts": TEXTS[:2], "top_k": 2}, timeout=30)
        assert status == 200
        assert [p["predicted_label"] for p in body["predictions"]] == ["billing", "shipping"]
        assert all(len(p["top_k"]) == 2 for p in body["predictions"])
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode is not None
