"""The service under hostile requests (issue 16, items 1-3): limits before parsing, never a 500, the API key.

FastAPI's TestClient for what an ASGI app decides; a real uvicorn server in a thread (with fenlei's settings) for
what only a socket shows (slow heads, short bodies, queueing, disconnects). Timeouts are set to fractions of a
second so the whole module stays within seconds; the load-shaped test is marked slow.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fenlei.errors import OptionError
from fenlei.serving.admission import ClientGone, Overloaded
from fenlei.serving.auth import check_exposure, is_loopback
from fenlei.serving.batcher import Batcher
from fenlei.serving.limits import ServiceLimits
from fenlei.serving.serve import create_app
from tests.conftest import fenlei_user_error
from tests.serving.serve_support import (
    FIXTURE_BUNDLE,
    KEY,
    FakePredictor,
    connect,
    head,
    read_reply,
    running_server,
    status_of,
)

FAST = ServiceLimits(max_body_bytes=10_000, header_timeout=0.6, body_timeout=0.6, keep_alive_timeout=0.5,
                     request_timeout=5.0, max_queue=2, max_concurrent=1, max_connections=64)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(FIXTURE_BUNDLE, max_chars=40, max_items=3, limits=FAST),
                      raise_server_exceptions=False)


@pytest.fixture(scope="module")
def keyed() -> TestClient:
    return TestClient(create_app(FIXTURE_BUNDLE, limits=FAST, api_key=KEY), raise_server_exceptions=False)


def post(client: TestClient, content: bytes | str, **headers: str) -> httpx.Response:
    data = content.encode() if isinstance(content, str) else content
    return client.post("/predict", content=data, headers={"content-type": "application/json", **headers})


# ---- 1. limits before parsing ----

def test_a_body_over_the_cap_is_413_before_it_is_read(client: TestClient) -> None:
    r = post(client, json.dumps({"text": "a" * 20_000}))
    assert r.status_code == 413 and "10000 bytes" in r.json()["detail"]
    assert r.headers["connection"] == "close"

    def chunks() -> Any:  # no Content-Length: counted as it streams
        for _ in range(30):
            yield b" " * 1000

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert post(client, b"{}", **{"content-length": "12x"}).status_code == 400


def test_validation_errors_never_echo_the_input(client: TestClient) -> None:
    r = post(client, json.dumps({"text": "secret " * 1000}))  # under the body cap, over max_chars
    assert r.status_code == 422 and "too long: 7000 characters > 40" in r.text
    assert "secret" not in r.text and len(r.content) < 1000
    detail = r.json()["detail"]
    assert all(set(e) == {"loc", "msg", "type"} for e in detail)
    r = post(client, json.dumps({"text": "a", "x" * 5000: 1}))  # the field name is the attacker's string
    assert r.status_code == 422 and len(r.content) < 1000
    r = post(client, json.dumps({"texts": [1] * 2000}))  # thousands of errors: the first few, then a count
    assert r.status_code == 422 and r.json()["detail"][-1]["msg"].startswith("... and")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"text": "a", "top_k": 1e400}', "finite number"),
        ('{"text": "a", "top_k": NaN}', "finite number"),
        ('{"text": "a", "top_k": -Infinity}', "finite number"),
        ('{"text": "a", "top_k": 1e5000, "texts": NaN}', "finite number"),
        ('{"text": "\\ud800"}', "text contains a lone surrogate (U+D800) at character 1"),
        ('{"texts": ["ok", "ab\\udfff"]}', "texts[1] contains a lone surrogate (U+DFFF) at character 3"),
        ('{"\\ud800": 1, "text": "a"}', "valid string"),  # pydantic refuses the key itself
        ('{"text": "\\u200b\\u200b\\u200d"}', "text has no visible characters"),
        ('{"text": "\\u0000\\u0000"}', "text has no visible characters"),
        ('{"texts": ["ok", "\\ufeff\\u2060\\u3164"]}', "texts[1] has no visible characters"),
        ('{"text": "a", "top_k": 1' + "0" * 5000 + "}", ""),  # more digits than Python parses: 400, not 500
        ("[" * 5000 + "]" * 5000, ""),  # nested past the parser's recursion limit
    ],
)
def test_hostile_values_are_4xx_with_a_message(client: TestClient, body: str, message: str) -> None:
    r = post(client, body)
    assert r.status_code in (400, 422), r.text
    assert message in r.text


def test_zero_width_inside_real_text_is_still_classified(client: TestClient) -> None:
    r = post(client, json.dumps({"text": "refund\u200b my\u0000 card"}))
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


JSON_LEAVES = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**40), max_value=10**40)
               | st.floats(allow_nan=True, allow_infinity=True)
               | st.text(st.characters(exclude_categories=()), max_size=60))  # surrogates and NULs included
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=20)
BODIES = (
    st.fixed_dictionaries({}, optional={"text": JSON_VALUES | st.text(st.characters(exclude_categories=())),
                                        "texts": st.lists(st.text(st.characters(exclude_categories=()), max_size=50),
                                                          max_size=5) | JSON_VALUES,
                                        "top_k": JSON_VALUES | st.integers(-3, 8), "extra": JSON_VALUES})
    | JSON_VALUES
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=BODIES, raw=st.booleans(), junk=st.binary(max_size=40))
def test_no_json_body_gets_a_5xx(client: TestClient, body: Any, raw: bool, junk: bytes) -> None:
    """Property: whatever JSON (NaN, 1e400, lone surrogates, nesting, wrong types) or bytes arrive, never a 5xx."""
    content = junk if raw else json.dumps(body, allow_nan=True).encode()
    r = post(client, content)
    assert r.status_code < 500, (content[:200], r.status_code, r.text[:500])
    assert r.status_code in (200, 400, 413, 422)
    r.json()  # the reply itself is valid JSON


# ---- 3. authentication, docs, metadata ----

def test_api_key_on_predict_and_metadata_not_on_health(keyed: TestClient) -> None:
    body = {"text": "refund my card"}
    r = keyed.post("/predict", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "API key" in r.json()["detail"]
    assert keyed.post("/predict", json=body, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert keyed.post("/predict", json=body, headers={"x-api-key": KEY + "x"}).status_code == 401
    assert keyed.post("/predict", json=body, headers={"authorization": f"Bearer {KEY}"}).status_code == 200
    assert keyed.post("/predict", json=body, headers={"authorization": f"bearer {KEY}"}).status_code == 200
    assert keyed.post("/predict", json=body, headers={"x-api-key": KEY}).status_code == 200
    assert keyed.get("/metadata").status_code == 401
    assert keyed.get("/metadata", headers={"x-api-key": KEY}).status_code == 200
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/anything-else").status_code == 401  # deny by default
    # The key is checked before the body is read: a huge body without a key never reaches the size check.
    assert keyed.post("/predict", content=b"x" * 50_000).status_code == 401


def test_docs_are_off_unless_asked() -> None:
    plain = TestClient(create_app(FIXTURE_BUNDLE))
    assert plain.get("/docs").status_code == 404 and plain.get("/openapi.json").status_code == 404
    documented = TestClient(create_app(FIXTURE_BUNDLE, api_key=KEY, docs=True))
    schema = documented.get("/openapi.json")  # open: a browser cannot send the key header to /docs
    assert schema.status_code == 200 and "/predict" in schema.json()["paths"]
    assert documented.get("/docs").status_code == 200


def test_metadata_names_files_not_paths(client: TestClient) -> None:
    meta = client.get("/metadata").json()
    text = json.dumps(meta)
    assert meta["bundle"] == "bundle" and meta["source"]["checkpoint"] == "best-epoch01.ckpt"
    assert meta["source"]["run_dir"] == "text" and meta["source"]["config_file"] == "config.yaml"
    assert "/tmp/" not in text and str(FIXTURE_BUNDLE.parent) not in text
    assert meta["labels"] == ["billing", "bug", "login", "shipping"]
    assert meta["limits"]["max_body_bytes"] == 10_000 and meta["limits"]["max_queue"] == 2


def test_exposure_needs_a_key_or_an_explicit_opt_out(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.1")
    assert not is_loopback("example.org")
    check_exposure("127.0.0.1", None, False)
    check_exposure("0.0.0.0", KEY, False)
    check_exposure("0.0.0.0", None, True)
    with pytest.raises(OptionError, match="--allow_unauthenticated"):
        check_exposure("0.0.0.0", None, False)
    error = fenlei_user_error(["serve", "--bundle", str(FIXTURE_BUNDLE), "--host", "0.0.0.0"], capsys)
    assert "--host 0.0.0.0 is reachable from other machines and no API key is set" in error
    monkeypatch.delenv("FENLEI_TEST_NO_SUCH_KEY", raising=False)
    error = fenlei_user_error(["serve", "--bundle", str(FIXTURE_BUNDLE), "--api_key_env", "FENLEI_TEST_NO_SUCH_KEY"],
                              capsys)
    assert "FENLEI_TEST_NO_SUCH_KEY is not set or empty" in error
    for option, value in [("--max_queue", "-1"), ("--request_timeout", "0"), ("--body_timeout", "-5"),
                          ("--max_body_bytes", "0")]:
        error = fenlei_user_error(["serve", "--bundle", str(FIXTURE_BUNDLE), option, value], capsys)
        assert error.startswith(f"fenlei: error: {option} must be"), error


# ---- admission: queue bound, deadline, disconnects (the batcher with a stand-in model, no server) ----

async def _here() -> bool:
    return False


async def _gone() -> bool:
    return True


def test_admission_bounds_the_queue_and_keeps_fifo_order() -> None:
    fake = FakePredictor()
    batcher = Batcher(fake, max_batch_texts=1, batch_wait_ms=0, max_queue=2, request_timeout=5)

    async def scenario() -> None:
        fake.gate.clear()

        async def job(text: str) -> str:
            try:
                rows = await batcher.predict_proba([text], time.monotonic() + 5, _here)
                return f"ok {int(rows[0, 0])}"
            except Overloaded as err:
                return f"503 retry {err.retry_after}"

        first = asyncio.create_task(job("a"))
        while not fake.computing.is_set():  # "a" is in the model, held at the gate
            await asyncio.sleep(0.005)
        queued = [asyncio.create_task(job(t)) for t in ("bb", "ccc")]
        await asyncio.sleep(0.01)
        refused = await job("dddd")  # two wait already: refused at once
        fake.gate.set()
        results = await asyncio.gather(first, *queued)
        assert results == ["ok 1", "ok 2", "ok 3"] and refused.startswith("503 retry ")

    asyncio.run(scenario())
    assert fake.batches == [["a"], ["bb"], ["ccc"]]  # first come, first served; "dddd" never computed
    assert batcher.stats["queue_full"] == 1 and batcher.queue.waiting() == 0 and batcher.queue.arriving == 0
    batcher.close()


def test_admission_deadline_and_client_gone() -> None:
    fake = FakePredictor()
    batcher = Batcher(fake, batch_wait_ms=0, max_queue=4, request_timeout=0.3)

    async def scenario() -> None:
        fake.gate.clear()
        holder = asyncio.create_task(batcher.predict_proba(["held"], time.monotonic() + 10, _here))
        while not fake.computing.is_set():
            await asyncio.sleep(0.005)
        with pytest.raises(Overloaded, match="deadline of 0.3 s") as info:
            await batcher.predict_proba(["late"], time.monotonic() + 0.3, _here)
        assert info.value.retry_after >= 1
        with pytest.raises(ClientGone):
            await batcher.predict_proba(["left"], time.monotonic() + 10, _gone)
        fake.gate.set()
        await holder
        rows = await batcher.predict_proba(["again"], time.monotonic() + 1, _here)  # the model is free again
        assert int(rows[0, 0]) == 5

    asyncio.run(scenario())
    assert fake.batches == [["held"], ["again"]]  # neither the late nor the departed request was computed
    assert batcher.stats["deadline"] == 1 and batcher.stats["client_gone"] == 1
    batcher.close()


# ---- a real server: timeouts, queueing and disconnects over sockets ----

class SlowPredict:
    """Stands in for ``BundlePredictor.predict_proba`` (one call per batch): each call takes ``seconds`` and is
    counted."""

    def __init__(self, predictor: Any, seconds: float) -> None:
        self.inner, self.seconds, self.calls = predictor.predict_proba, seconds, 0
        self.started = threading.Event()  # set by the first call: a test can wait for the model to be busy

    def __call__(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.started.set()
        time.sleep(self.seconds)
        return self.inner(texts, *args, **kwargs)


@pytest.fixture
def served() -> Any:
    app = create_app(FIXTURE_BUNDLE, limits=FAST)
    with running_server(app, FAST) as port:
        yield app, port


def test_slow_head_short_body_and_idle_connections_are_cut(served: Any) -> None:
    _app, port = served
    started = time.monotonic()
    slow = connect(port)
    slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
    for _ in range(4):  # bytes keep coming, but the deadline runs from the connection's start
        time.sleep(0.1)
        slow.sendall(b"X")
    assert status_of(read_reply(slow)) == 408 and time.monotonic() - started < 2.0

    short = connect(port)
    short.sendall(head("POST", "/predict", {"content-type": "application/json", "content-length": "100"}) + b'{"te')
    started = time.monotonic()
    reply = read_reply(short)
    assert status_of(reply) == 408 and b"request body not received within 0.6 s" in reply
    assert time.monotonic() - started < 3

    idle = connect(port)
    idle.sendall(head("GET", "/health", {}))
    started = time.monotonic()
    reply = read_reply(idle)  # the reply, then the keep-alive timeout closes the connection
    assert status_of(reply) == 200 and time.monotonic() - started < 3


def test_oversized_bodies_over_a_socket(served: Any) -> None:
    _app, port = served
    big = connect(port)
    big.sendall(head("POST", "/predict", {"content-type": "application/json", "content-length": str(100 * 2**20)}))
    assert status_of(read_reply(big)) == 413  # answered before a byte of the 100 MB is sent

    chunked = connect(port)
    chunked.sendall(head("POST", "/predict", {"content-type": "application/json", "transfer-encoding": "chunked"}))
    sent, refused = 0, False
    try:
        while sent < 64 * 2**20:
            chunked.sendall(b"4000\r\n" + b" " * 0x4000 + b"\r\n")
            sent += 0x4000
    except OSError:  # the server closed the connection after its 413
        refused = True
    # Stopped long before 64 MB (what got through fits in the loopback socket buffers, a few MB).
    assert refused and sent < 32 * 2**20
    reply = read_reply(chunked)
    assert status_of(reply) in (413, None)  # a reset can swallow the reply; the point is the early stop


def test_a_full_queue_is_503_with_retry_after_and_health_stays_fast(served: Any) -> None:
    app, port = served
    slow = SlowPredict(app.state.predictor, 0.8)  # long enough for all 7 to arrive while the first computes
    app.state.predictor.predict_proba = slow
    url = f"http://127.0.0.1:{port}"
    results: list[httpx.Response] = []

    def call() -> None:
        results.append(httpx.post(f"{url}/predict", json={"text": "refund my card"}, timeout=10))

    first = threading.Thread(target=call)
    first.start()
    assert slow.started.wait(10)  # the first computes alone; the next ones queue behind it
    threads = [threading.Thread(target=call) for _ in range(7)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    assert time.monotonic() - started < 0.5  # not behind the queued work
    for t in [first, *threads]:
        t.join(timeout=15)
    statuses = sorted(r.status_code for r in results)
    assert len(statuses) == 8 and set(statuses) == {200, 503}, statuses
    assert statuses.count(200) == 3  # one computing, two queued (max_queue 2) ...
    assert slow.calls == 2  # ... and the two queued ones shared one batch
    assert all(int(r.headers["retry-after"]) >= 1 for r in results if r.status_code == 503)
    assert app.state.batcher.stats["queue_full"] == 5


def test_requests_of_departed_clients_are_not_computed(served: Any) -> None:
    app, port = served
    slow = SlowPredict(app.state.predictor, 0.6)
    app.state.predictor.predict_proba = slow
    url = f"http://127.0.0.1:{port}"
    first = threading.Thread(target=lambda: httpx.post(f"{url}/predict", json={"text": "a b"}, timeout=10))
    first.start()
    # Wait until the first request computes (a fixed 0.1 s was not enough on a loaded CI machine: the leaver then
    # arrived first and was computed).
    assert slow.started.wait(10)
    body = json.dumps({"text": "refund my card"}).encode()
    leaver = connect(port)  # queued behind the first, then gone
    leaver.sendall(head("POST", "/predict", {"content-type": "application/json", "content-length": str(len(body))})
                   + body)
    time.sleep(0.1)
    leaver.shutdown(socket.SHUT_RDWR)
    leaver.close()
    first.join(timeout=10)
    time.sleep(0.5)
    assert slow.calls == 1 and app.state.batcher.stats["client_gone"] == 1


def test_the_deadline_turns_a_long_wait_into_503() -> None:
    limits = ServiceLimits(request_timeout=0.4, max_queue=4)
    app = create_app(FIXTURE_BUNDLE, limits=limits)
    app.state.predictor.predict_proba = SlowPredict(app.state.predictor, 1.0)
    results: list[httpx.Response] = []
    with running_server(app, limits) as port:
        url = f"http://127.0.0.1:{port}"
        threads = [threading.Thread(target=lambda: results.append(
            httpx.post(f"{url}/predict", json={"text": "a"}, timeout=10))) for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(timeout=10)
    assert sorted(r.status_code for r in results) == [200, 503]
    late = next(r for r in results if r.status_code == 503)
    assert "deadline of 0.4 s" in late.json()["detail"] and int(late.headers["retry-after"]) >= 1


@pytest.mark.slow
def test_64_concurrent_maximal_requests_get_answers_not_timeouts(tmp_path: Path) -> None:
    """Load-shaped (about 10-20 s on 2 cores): 64 clients at once, each with the largest request the service takes;
    every client gets 200 or 503 in time, and small requests right after are quick again."""
    limits = ServiceLimits(max_queue=8, request_timeout=20)
    app = create_app(FIXTURE_BUNDLE, limits=limits, max_chars=2000, max_items=64)
    with running_server(app, limits) as port:
        url = f"http://127.0.0.1:{port}"
        body = {"texts": ["refund my card please " * 90 + "x" * 20] * 64}
        results: list[int | str] = []

        def call() -> None:
            try:
                results.append(httpx.post(f"{url}/predict", json=body, timeout=30).status_code)
            except httpx.TimeoutException:
                results.append("timeout")

        threads = [threading.Thread(target=call) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(results) == 64 and set(results) <= {200, 503}, results
        assert results.count(200) >= 1 and results.count(503) >= 1
        latencies = []
        with httpx.Client(timeout=10) as small:
            for _ in range(100):
                started = time.perf_counter()
                assert small.post(f"{url}/predict", json={"text": "refund my card"}).status_code == 200
                latencies.append(time.perf_counter() - started)
        assert sorted(latencies)[98] < 0.5, f"p99 {sorted(latencies)[98]:.3f} s after the burst"
