"""Dynamic batching and operations of the HTTP service (issue 18, items 1 and 2).

Batching: every caller gets exactly its own rows, equal to predicting its texts alone (fp32; mixed lengths, batch
requests, concurrent callers), and the requests really shared batches. Operations: /metrics, /ready before and
after warm-up, the request id (header and access log), SIGTERM draining batched requests in a real uvicorn
process, and the app factory under ``uvicorn --factory --workers 2``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from fenlei.errors import OptionError
from fenlei.serving.batcher import Batcher
from fenlei.serving.limits import ServiceLimits
from fenlei.serving.predictor import BundlePredictor
from fenlei.serving.serve import app_factory, create_app
from tests.conftest import REPO_ROOT
from tests.serving.serve_support import FIXTURE_BUNDLE, KEY, FakePredictor, free_port, running_server

WORDS = ["refund", "my", "card", "please", "the", "courier", "is", "late", "again", "screen", "freeze", "crash",
         "password", "reset", "help"]


def _texts(n: int, seed: int) -> list[str]:
    """``n`` texts of 1 to 40 words (the fixture model reads 32 tokens: some are cut, most padded)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 40)))) for _ in range(n)]


class Gated:
    """Wraps ``predict_proba``: records each batch's size and holds the first batch until ``release`` is set, so
    the requests sent meanwhile queue up and form the next batches."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.sizes = inner, []
        self.first, self.release = threading.Event(), threading.Event()

    def __call__(self, texts: list[str], batch_size: int = 32) -> Any:
        self.sizes.append(len(texts))
        if not self.first.is_set():
            self.first.set()
            assert self.release.wait(20)
        return self.inner(texts, batch_size)


# ---- 1. batching: each caller's own rows ----

def test_concurrent_callers_get_their_own_rows_equal_to_unbatched() -> None:
    predictor = BundlePredictor(FIXTURE_BUNDLE, "fp32")
    gated = predictor.predict_proba = Gated(predictor.predict_proba)
    batcher = Batcher(predictor, max_batch_texts=16, batch_wait_ms=0, max_queue=64)
    # Single texts and batch requests of mixed lengths; one request (20 texts) is bigger than a batch (16).
    requests = [_texts(1, s) for s in range(12)] + [_texts(k, 100 + k) for k in (2, 3, 5, 7, 20)]

    async def scenario() -> list[np.ndarray]:
        deadline = time.monotonic() + 20

        async def here() -> bool:
            return False

        first = asyncio.create_task(batcher.predict_proba(["hold the model"], deadline, here))
        while not gated.first.is_set():
            await asyncio.sleep(0.005)
        tasks = [asyncio.create_task(batcher.predict_proba(texts, deadline, here)) for texts in requests]
        await asyncio.sleep(0.05)
        gated.release.set()
        await first
        return list(await asyncio.gather(*tasks))

    answers = asyncio.run(scenario())
    batcher.close()
    assert max(gated.sizes) == 16 and len(gated.sizes) < len(requests)  # they shared full batches
    for texts, rows in zip(requests, answers, strict=True):
        alone = np.stack([gated.inner([t], 1)[0] for t in texts])
        np.testing.assert_allclose(rows, alone, rtol=0, atol=2e-6)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_batched_http_answers_equal_unbatched_ones(precision: str) -> None:
    """Concurrent HTTP callers (single texts and batch requests, mixed lengths, several top_k) against the same
    texts predicted one by one. fp32: equal to rounding. int8: the activation scales are per batch, so the
    probabilities move a little; labels and top-k order must still be each caller's own."""
    limits = ServiceLimits(max_queue=64, request_timeout=20)
    app = create_app(FIXTURE_BUNDLE, precision=precision, limits=limits, max_batch_texts=8)
    predictor = app.state.predictor
    gated = predictor.predict_proba = Gated(predictor.predict_proba)
    bodies: list[dict[str, Any]] = [{"text": t} for t in _texts(10, 1)]
    bodies += [{"texts": _texts(k, 10 + k), "top_k": 1 + k % 4} for k in (2, 4, 6, 11)]
    with running_server(app, limits) as port:
        url = f"http://127.0.0.1:{port}/predict"
        holder = threading.Thread(target=lambda: httpx.post(url, json={"text": "hold"}, timeout=30))
        holder.start()
        assert gated.first.wait(10)
        replies: dict[int, httpx.Response] = {}
        threads = [threading.Thread(target=lambda i=i, b=b: replies.__setitem__(i, httpx.post(url, json=b, timeout=30)))
                   for i, b in enumerate(bodies)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while app.state.batcher.queue.waiting() < len(bodies) and time.monotonic() < deadline:
            time.sleep(0.01)
        gated.release.set()
        for t in [holder, *threads]:
            t.join(timeout=30)
    assert sorted(replies) == list(range(len(bodies))) and all(r.status_code == 200 for r in replies.values())
    assert any(size > 1 for size in gated.sizes[1:]) and max(gated.sizes) <= 8
    atol = 2e-6 if precision == "fp32" else 0.05
    for i, body in enumerate(bodies):
        texts = [body["text"]] if "text" in body else body["texts"]
        top_k = body.get("top_k", 4)
        got = replies[i].json()["predictions"]
        alone = [predictor.format_predictions(gated.inner([t], 1), top_k)[0] for t in texts]
        assert len(got) == len(texts)
        for g, a in zip(got, alone, strict=True):
            assert g["predicted_label"] == a["predicted_label"]
            assert [x["label"] for x in g["top_k"]] == [x["label"] for x in a["top_k"]]
            assert abs(g["confidence"] - a["confidence"]) <= atol


def test_batch_options_are_checked() -> None:
    with pytest.raises(OptionError, match="--max_batch_texts must be an integer >= 1"):
        Batcher(FakePredictor(), max_batch_texts=0)
    with pytest.raises(OptionError, match="--batch_wait_ms must be"):
        Batcher(FakePredictor(), batch_wait_ms=-1)


def test_a_batch_waits_only_for_requests_already_arriving() -> None:
    """batch_wait_ms: a lone request is not held back; one with another request still being read waits for it."""
    fake = FakePredictor()
    batcher = Batcher(fake, max_batch_texts=8, batch_wait_ms=300)

    async def scenario() -> tuple[float, list[list[str]]]:
        async def here() -> bool:
            return False

        deadline = time.monotonic() + 10
        started = time.perf_counter()
        await batcher.predict_proba(["alone"], deadline, here)
        alone_s = time.perf_counter() - started
        batcher.queue.arrived(+1)  # a second request is being read (what Arrivals counts)
        first = asyncio.create_task(batcher.predict_proba(["first"], deadline, here))
        await asyncio.sleep(0.05)
        scope = {"fenlei.arriving": True}
        second = asyncio.create_task(batcher.predict_proba(["second"], deadline, here, scope))
        await asyncio.gather(first, second)
        return alone_s, fake.batches

    alone_s, batches = asyncio.run(scenario())
    batcher.close()
    assert alone_s < 0.25  # not the 300 ms wait
    assert batches == [["alone"], ["first", "second"]] and batcher.queue.arriving == 0


# ---- 2. operations ----

def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name + (f"{{{want}}}" if want else "")) + r" ([0-9.e+-]+)$"
    values = [float(m.group(1)) for line in text.splitlines() if (m := re.match(pattern, line))]
    assert values, f"{name}{{{want}}} not in /metrics"
    return values[0]


def test_metrics_count_requests_errors_batches_and_uncertain_answers() -> None:
    app = create_app(FIXTURE_BUNDLE, api_key=KEY, max_chars=400)
    client = TestClient(app, raise_server_exceptions=False)
    auth = {"x-api-key": KEY}
    replies = [client.post("/predict", json={"texts": _texts(3, s)}, headers=auth) for s in range(4)]
    assert all(r.status_code == 200 for r in replies)
    assert client.post("/predict", json={"text": "x" * 401}, headers=auth).status_code == 422
    assert client.post("/predict", json={"text": "a"}).status_code == 401
    assert client.get("/no/such/path/" + "z" * 300, headers=auth).status_code == 404
    assert client.get("/metrics").status_code == 401  # behind the key, as every route but /health and /ready
    r = client.get("/metrics", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert _metric(text, "fenlei_requests_total", route="/predict", status="200") == 4
    assert _metric(text, "fenlei_request_errors_total", route="/predict", status="422") == 1
    assert _metric(text, "fenlei_request_errors_total", route="/predict", status="401") == 1
    assert _metric(text, "fenlei_requests_total", route="other", status="404") == 1  # not the attacker's path
    assert "z" * 50 not in text
    assert _metric(text, "fenlei_request_duration_seconds_count", route="/predict") == 6
    assert _metric(text, "fenlei_batch_texts_count") == 4 and _metric(text, "fenlei_batch_texts_sum") == 12
    assert _metric(text, "fenlei_batch_requests_sum") == 4
    assert _metric(text, "fenlei_queue_requests") == 0 and _metric(text, "fenlei_queue_texts") == 0
    answers = [p for r in replies for p in r.json()["predictions"]]
    assert _metric(text, "fenlei_predictions_total") == len(answers) == 12
    uncertain = sum(p["uncertain"] for p in answers)
    if uncertain:
        assert _metric(text, "fenlei_uncertain_predictions_total") == uncertain
    else:
        assert "fenlei_uncertain_predictions_total 0.0" in text
    assert _metric(text, "fenlei_ready") == 1


def test_ready_is_503_until_every_session_is_warm() -> None:
    app = create_app(FIXTURE_BUNDLE, limits=ServiceLimits(max_concurrent=2), intra_op_threads=1)
    predictor = app.state.predictor
    warm = threading.Event()
    inner = predictor.predict_logits

    def held(texts: list[str], batch_size: int = 32) -> Any:
        assert warm.wait(20)
        return inner(texts, batch_size)

    predictor.predict_logits = held  # the first session's warm-up waits for the test
    with TestClient(app) as client:  # runs the app's start-up: the sessions begin to warm up
        r = client.get("/ready")
        assert r.status_code == 503 and r.json() == {"status": "warming up"} and r.headers["retry-after"] == "1"
        assert client.get("/health").status_code == 200  # alive all along
        assert "fenlei_ready 0.0" in client.get("/metrics").text
        warm.set()
        deadline = time.monotonic() + 10
        while (r := client.get("/ready")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.status_code == 200 and r.json() == {"status": "ready", "sessions": 2}
        assert "fenlei_ready 1.0" in client.get("/metrics").text
        assert client.post("/predict", json={"text": "refund my card"}).status_code == 200


def test_request_id_in_the_header_and_the_access_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fenlei.access")
    client = TestClient(create_app(FIXTURE_BUNDLE, api_key=KEY), raise_server_exceptions=False)
    auth = {"x-api-key": KEY}
    r = client.post("/predict", json={"text": "refund my card"}, headers={**auth, "x-request-id": "order-42.a"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "order-42.a"
    fresh = client.get("/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", fresh)
    for bad in ("two words", "x" * 129, "evil\u00e9"):  # not a plain token: replaced, never echoed or logged
        got = client.get("/health", headers={"x-request-id": bad.encode("utf-8")}).headers["x-request-id"]
        assert got != bad and re.fullmatch(r"[0-9a-f]{32}", got)
    refused = client.post("/predict", json={"text": "a"})  # a reply from a middleware carries one too
    assert refused.status_code == 401 and re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "fenlei.access"]
    assert any('"POST /predict HTTP/1.1" 200' in line and "id=order-42.a" in line for line in lines), lines
    assert any(f"id={fresh}" in line and '"GET /health' in line for line in lines)
    assert any(f"id={refused.headers['x-request-id']}" in line and " 401 " in line for line in lines)


def test_app_factory_needs_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FENLEI_SERVE_ARGS", raising=False)
    with pytest.raises(OptionError, match="set FENLEI_SERVE_ARGS to the options of `fenlei serve`"):
        app_factory()
    monkeypatch.setenv("FENLEI_SERVE_ARGS", f"--bundle {FIXTURE_BUNDLE} --max_batch_texts 4 --max_queue 3 --docs")
    app = app_factory()
    assert app.state.batcher.max_batch_texts == 4 and app.state.limits.max_queue == 3
    assert TestClient(app).get("/openapi.json").status_code == 200


# ---- real processes: SIGTERM, uvicorn --factory --workers ----

SLOW_SERVER = """
import pathlib, sys, time
import uvicorn
from fenlei.serving.limits import ServiceLimits
from fenlei.serving.protocol import uvicorn_config
from fenlei.serving.serve import create_app

port, marker = int(sys.argv[1]), pathlib.Path(sys.argv[2])
limits = ServiceLimits(request_timeout=20)
app = create_app({bundle!r}, limits=limits, max_batch_texts=8)
inner = app.state.predictor.predict_proba

def slow(texts, batch_size=32):  # every batch takes 1.5 s: SIGTERM lands while requests are in one and queued
    marker.write_text(str(len(texts)))
    time.sleep(1.5)
    return inner(texts, batch_size)

app.state.predictor.predict_proba = slow
uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, limits, "warning")).run()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def _wait_ready(url: str, proc: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail("the service was not ready in time")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=20)


def test_sigterm_finishes_in_flight_requests_batched_ones_included(tmp_path: Path) -> None:
    port, marker = free_port(), tmp_path / "computing"
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SERVER.format(bundle=str(FIXTURE_BUNDLE)), str(port),
                             str(marker)], cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_ready(url, proc)
        bodies = [{"text": "refund my card"}, {"text": "the courier is late"}, {"texts": ["a b", "password reset"]},
                  {"text": "screen freeze"}, {"texts": _texts(3, 7)}]
        replies: dict[int, Any] = {}

        def call(i: int, body: dict[str, Any]) -> None:
            try:
                replies[i] = httpx.post(f"{url}/predict", json=body, timeout=30)
            except httpx.HTTPError as err:
                replies[i] = err

        first = threading.Thread(target=call, args=(0, bodies[0]))
        first.start()
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:  # the first batch computes...
            time.sleep(0.01)
        threads = [threading.Thread(target=call, args=(i, b)) for i, b in enumerate(bodies) if i]
        for t in threads:
            t.start()
        while time.monotonic() < deadline:  # ... and the four others wait for the next one
            if "fenlei_queue_requests 4.0" in httpx.get(f"{url}/metrics", timeout=5).text:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the requests did not queue")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no new connections while draining
            httpx.get(f"{url}/health", timeout=2)
        for t in [first, *threads]:
            t.join(timeout=30)
        proc.wait(timeout=30)
    finally:
        _stop(proc)
    assert proc.returncode in (0, -signal.SIGTERM)
    assert marker.read_text() == "7"  # the last batch held the four queued requests (seven texts)
    for i, body in enumerate(bodies):
        assert isinstance(replies[i], httpx.Response) and replies[i].status_code == 200, replies[i]
        assert len(replies[i].json()["predictions"]) == len(body.get("texts", [None]))


def _worker_files(metrics_dir: Path) -> set[str]:
    return {p.name.split("_")[-1] for p in metrics_dir.glob("*.db")}


def test_app_factory_under_uvicorn_workers_with_shared_metrics(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    env = {**_env(), "FENLEI_SERVE_ARGS": f"--bundle '{FIXTURE_BUNDLE}' --max_batch_texts 4 --log_level warning",
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "fenlei.serving.serve:app_factory",
                             "--workers", "2", "--port", str(port), "--log-level", "warning"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(url, proc, seconds=90)
        # New connections until both workers have answered: which worker accepts is the kernel's choice, and the
        # second may still be loading its model when the first reports ready (a loaded machine shows it).
        sent, deadline = 0, time.monotonic() + 60
        with httpx.Client(timeout=10) as client:
            while sent < 12 or (len(_worker_files(metrics_dir)) < 2 and time.monotonic() < deadline):
                r = client.post(url + "/predict", json={"texts": _texts(2, sent)}, headers={"connection": "close"})
                assert r.status_code == 200 and len(r.json()["predictions"]) == 2
                sent += 1
            text = client.get(url + "/metrics").text
        pids = _worker_files(metrics_dir)
        assert len(pids) >= 2, pids  # both workers wrote their values
        assert _metric(text, "fenlei_requests_total", route="/predict", status="200") == sent  # summed over workers
        assert _metric(text, "fenlei_predictions_total") == 2 * sent
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        _stop(proc)
    assert json.dumps(proc.returncode) in ("0", str(-signal.SIGTERM))
