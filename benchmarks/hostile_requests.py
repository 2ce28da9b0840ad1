"""Replay the hostile requests of issue 16 against `fenlei serve` over loopback; print and save case / expected /
observed.

    python benchmarks/hostile_requests.py                          # starts `fenlei serve` on the fixture bundle
    python benchmarks/hostile_requests.py --bundle bundles/banking77
    FENLEI_API_KEY=... python benchmarks/hostile_requests.py --url http://127.0.0.1:8000 --api_key_env FENLEI_API_KEY

With ``--bundle`` (default: the small committed bundle tests/fixtures/layout_v0/bundle) the script starts the
service itself on a free loopback port with a random API key and default limits, and also records the server's
resident memory around the big bodies. With ``--url`` it targets a running service (loopback only: this is a
load and abuse tool) and needs that service's key. Cases: no/bad API key, ``/docs``, a 100 MB text, a chunked body
of 20 million texts (with ``/health`` timed meanwhile), 40 slow-header connections, a short ``Content-Length``,
64 concurrent maximal requests followed by small ones, ``top_k`` 1e400 and NaN, a lone surrogate, zero-width and
NUL-only texts, and a 422 that must not echo its input. A default run takes about a minute (two 10 s timeouts and
the burst); ``--big_mb`` and ``--texts_millions`` shrink the big bodies. Results: the table on stdout and
``benchmarks/results/hostile_requests.json`` (written atomically; exit status 1 when a case fails). ``--smoke``: a
2 MB text, 2 million texts (both over the default body limit), 8 concurrent clients, results in ``benchmarks/results/smoke/``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import burst, machine, maximal_body, results_dir  # noqa: E402
from fenlei.io import atomic_write_json  # noqa: E402

DEFAULT_BUNDLE = REPO / "tests" / "fixtures" / "layout_v0" / "bundle"
RESULTS = REPO / "benchmarks" / "results" / "hostile_requests.json"
KEY_ENV = "FENLEI_HOSTILE_KEY"


class Target:
    """Where the service listens, its key, and (when this script started it) its process for memory readings."""

    def __init__(self, url: str, key: str | None, proc: subprocess.Popen[bytes] | None = None) -> None:
        parsed = urlparse(url)
        self.url, self.host, self.port = url.rstrip("/"), parsed.hostname or "127.0.0.1", parsed.port or 80
        self.key, self.proc = key, proc

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"} if self.key else {}

    def rss_mb(self) -> float | None:
        if self.proc is None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None


def start_service(bundle: Path) -> Target:
    port = _free_port()
    key = secrets.token_hex(24)
    proc = subprocess.Popen([sys.executable, "cli.py", "serve", "--bundle", str(bundle), "--port", str(port),
                             "--api_key_env", KEY_ENV, "--log_level", "warning"], cwd=REPO,
                            env={**os.environ, KEY_ENV: key}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = Target(f"http://127.0.0.1:{port}", key, proc)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{target.url}/health", timeout=1).status_code == 200:
                return target
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"fenlei serve did not start: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- raw HTTP: what a well-behaved client library would never send ----

def _connect(t: Target, timeout: float = 30) -> socket.socket:
    sock = socket.create_connection((t.host, t.port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def _head(t: Target, method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {t.host}", *(f"{k}: {v}" for k, v in {**t.auth(), **headers}.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _status(reply: bytes) -> str:
    return reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/1.") else "no reply"


def _early_reply(sock: socket.socket, wait: float) -> bytes:
    """A reply the server sends before the body (413 on the declared length), or b"" after ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return b""
    finally:
        sock.settimeout(30)


def _stream(sock: socket.socket, chunks: Iterator[bytes]) -> int:
    """Send chunks until the server stops taking them; returns the bytes sent."""
    sent = 0
    try:
        for chunk in chunks:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    return sent


# ---- cases: each returns (observed, passed) ----

def case_no_key(t: Target) -> tuple[str, bool]:
    import httpx

    r = httpx.post(f"{t.url}/predict", json={"text": "hello"}, timeout=10)
    return f"{r.status_code}", r.status_code == 401


def case_bad_key(t: Target) -> tuple[str, bool]:
    import httpx

    r = httpx.post(f"{t.url}/predict", json={"text": "hello"}, headers={"x-api-key": "wrong"}, timeout=10)
    return f"{r.status_code}", r.status_code == 401


def case_docs(t: Target) -> tuple[str, bool]:
    import httpx

    codes = [httpx.get(f"{t.url}{p}", headers=t.auth(), timeout=10).status_code for p in ("/docs", "/openapi.json")]
    return f"/docs {codes[0]}, /openapi.json {codes[1]}", codes == [404, 404]


def case_health_open(t: Target) -> tuple[str, bool]:
    import httpx

    r = httpx.get(f"{t.url}/health", timeout=10)
    return f"{r.status_code}", r.status_code == 200


def case_big_text(t: Target, mb: int) -> tuple[str, bool]:
    size = mb * 2**20
    rss = t.rss_mb()
    sock = _connect(t)
    started = time.perf_counter()
    sock.sendall(_head(t, "POST", "/predict", {"content-type": "application/json", "content-length": str(size)}))
    reply = _early_reply(sock, 2.0)
    sent = 0
    if not reply:  # no early refusal: send the text and see what comes back
        piece = b"a" * 2**20
        sent = _stream(sock, iter([b'{"text": "', *(piece for _ in range(mb - 1)), piece[:-12], b'"}']))
        reply = _read_all(sock)
    sock.close()
    seconds = time.perf_counter() - started
    grew = _rss_growth(t, rss)
    status = _status(reply)
    return (f"{status} after {seconds:.2f} s, {sent / 2**20:.0f} MB of {mb} MB sent{grew}",
            status == "413" and sent == 0)


def case_many_texts(t: Target, millions: float) -> tuple[str, bool]:
    import httpx

    n = int(millions * 1e6)
    per_chunk = 16384
    rss = t.rss_mb()
    sock = _connect(t)
    sock.sendall(_head(t, "POST", "/predict", {"content-type": "application/json", "transfer-encoding": "chunked"}))

    def chunks() -> Iterator[bytes]:
        def chunk(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data)

        yield chunk(b'{"texts": [')
        for start in range(0, n, per_chunk):
            yield chunk(b'"a",' * min(per_chunk, n - start))
        yield chunk(b'"a"]}') + b"0\r\n\r\n"

    health: list[float] = []
    done = threading.Event()

    def probe() -> None:  # /health must stay quick while the big body arrives (it blocked for 14.4 s)
        while not done.is_set():
            started = time.perf_counter()
            httpx.get(f"{t.url}/health", timeout=30)
            health.append(time.perf_counter() - started)
            time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    started = time.perf_counter()
    sent = _stream(sock, chunks())
    reply = _read_all(sock)
    seconds = time.perf_counter() - started
    done.set()
    prober.join()
    sock.close()
    status = _status(reply)
    worst = max(health) if health else float("nan")
    body_mb = (n * 4 + 16) / 2**20
    # How much the client got to send says little: the loopback socket buffers take several MB before the refusal
    # reaches it. What counts is a quick refusal, /health answering meanwhile, and the server's memory staying flat.
    after = t.rss_mb()
    flat = rss is None or after is None or after - rss < 50
    ok = status in ("413", "no reply") and seconds < 5 and worst < 1.0 and flat
    return (f"{status} after {seconds:.2f} s, {sent / 2**20:.1f} of {body_mb:.0f} MB sent (chunked); "
            f"/health max {1000 * worst:.0f} ms{_rss_growth(t, rss)}", ok)


def case_slow_headers(t: Target, connections: int = 40) -> tuple[str, bool]:
    socks = [_connect(t, timeout=60) for _ in range(connections)]
    for s in socks:
        s.sendall(f"POST /predict HTTP/1.1\r\nHost: {t.host}\r\n".encode())
    started = time.perf_counter()
    closed_at: dict[int, float] = {}
    replies: dict[int, bytes] = {}
    while len(closed_at) < connections and time.perf_counter() - started < 45:
        for i, s in enumerate(socks):
            if i in closed_at:
                continue
            try:
                s.sendall(b"X-Slow: 1\r\n")  # a header line a second, never the blank line
                s.settimeout(0.001)
                replies[i] = s.recv(4096)  # a reply (408) or b"": the server is done with this connection
                closed_at[i] = time.perf_counter() - started
            except TimeoutError:
                pass
            except OSError:
                closed_at[i] = time.perf_counter() - started
        time.sleep(1.0)
    for s in socks:
        s.close()
    statuses = sorted({_status(r) for r in replies.values()})
    worst = max(closed_at.values()) if closed_at else float("inf")
    return (f"{len(closed_at)}/{connections} closed, the last after {worst:.1f} s; replies {', '.join(statuses)}",
            len(closed_at) == connections and worst < 20)


def case_short_length(t: Target) -> tuple[str, bool]:
    sock = _connect(t)
    started = time.perf_counter()
    sock.sendall(_head(t, "POST", "/predict", {"content-type": "application/json", "content-length": "100"})
                 + b'{"text": "')
    reply = _read_all(sock)
    sock.close()
    seconds = time.perf_counter() - started
    return f"{_status(reply)} after {seconds:.1f} s", _status(reply) == "408" and seconds < 20


def case_burst(t: Target, clients: int) -> tuple[str, bool]:
    import httpx

    limits = httpx.get(f"{t.url}/metadata", headers=t.auth(), timeout=10).json()["limits"]
    counts, burst_s = burst(f"{t.url}/predict", maximal_body(limits), clients, t.auth())
    latencies = []
    with httpx.Client(timeout=30, headers=t.auth()) as client:
        for _ in range(200):
            t0 = time.perf_counter()
            client.post(f"{t.url}/predict", json={"text": "my card has not arrived"})
            latencies.append(time.perf_counter() - t0)
    latencies.sort()
    p99 = latencies[int(0.99 * len(latencies)) - 1]
    ok = set(counts) <= {"200", "503+retry-after"} and p99 < 1.0
    return (f"{counts} in {burst_s:.1f} s; then 200 small requests p99 {1000 * p99:.0f} ms", ok)


def _json_case(body: bytes, want: int, message: str) -> Callable[[Target], tuple[str, bool]]:
    def run(t: Target) -> tuple[str, bool]:
        import httpx

        r = httpx.post(f"{t.url}/predict", content=body, headers={**t.auth(), "content-type": "application/json"},
                       timeout=10)
        detail = json.dumps(r.json().get("detail"), ensure_ascii=False) if r.content else ""
        return f"{r.status_code}: {detail[:90]}", r.status_code == want and message in detail

    return run


def case_no_echo(t: Target) -> tuple[str, bool]:
    import httpx

    r = httpx.post(f"{t.url}/predict", json={"text": "SECRET" * 100_000}, headers=t.auth(), timeout=10)
    return (f"{r.status_code}, reply {len(r.content)} bytes",
            r.status_code in (413, 422) and b"SECRET" not in r.content and len(r.content) < 2000)


def _rss_growth(t: Target, before: float | None) -> str:
    after = t.rss_mb()
    return f"; server RSS {before:.0f} -> {after:.0f} MB" if before is not None and after is not None else ""


def cases(args: argparse.Namespace) -> list[tuple[str, str, Callable[[Target], tuple[str, bool]]]]:
    return [
        ("no API key", "401", case_no_key),
        ("bad API key", "401", case_bad_key),
        ("/docs, /openapi.json", "404 (off unless --docs)", case_docs),
        ("/health without key", "200", case_health_open),
        (f"{args.big_mb} MB text (Content-Length)", "413 before the body is sent, memory flat",
         lambda t: case_big_text(t, args.big_mb)),
        (f"{args.texts_millions:g}M texts body (chunked)", "413 within 5 s, /health < 1 s meanwhile, memory flat",
         lambda t: case_many_texts(t, args.texts_millions)),
        ("40 slow-header connections", "all closed with 408 after --header_timeout (10 s)", case_slow_headers),
        ("short Content-Length", "408 after --body_timeout (10 s)", case_short_length),
        (f"{args.concurrent} concurrent maximal requests", "200 or 503 + Retry-After, no timeouts; p99 after < 1 s",
         lambda t: case_burst(t, args.concurrent)),
        ("top_k 1e400", "422", _json_case(b'{"text": "a", "top_k": 1e400}', 422, "finite number")),
        ("top_k NaN", "422", _json_case(b'{"text": "a", "top_k": NaN}', 422, "finite number")),
        ("lone surrogate", "422", _json_case(b'{"text": "\\ud800"}', 422, "lone surrogate")),
        ("zero-width-only text", "422", _json_case(b'{"text": "\\u200b\\u200d\\ufeff"}', 422, "no visible")),
        ("NUL-only text", "422", _json_case(b'{"text": "\\u0000\\u0000"}', 422, "no visible")),
        ("600 KB text, 422 reply", "4xx without the input echoed", case_no_echo),
    ]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | expected | observed | ok |", "|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['expected']} | {r['observed']} | {'yes' if r['ok'] else '**no**'} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="start `fenlei serve` on this bundle")
    where.add_argument("--url", help="target a running service instead (loopback only)")
    parser.add_argument("--api_key_env", help="with --url: environment variable holding the service's API key")
    parser.add_argument("--big_mb", type=int, default=100, help="size of the big text, MB")
    parser.add_argument("--texts_millions", type=float, default=20, help="texts in the chunked body, millions")
    parser.add_argument("--concurrent", type=int, default=64, help="clients in the burst of maximal requests")
    parser.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS.relative_to(REPO)})")
    parser.add_argument("--smoke", action="store_true", help="plumbing check: small bodies and burst (see above)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.big_mb, args.texts_millions, args.concurrent = min(args.big_mb, 2), min(args.texts_millions, 2), min(args.concurrent, 8)
    args.out = args.out or results_dir(args.smoke) / RESULTS.name
    if args.url:
        host = urlparse(args.url).hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1"):
            parser.error(f"--url must be a loopback address, got {host!r}")
        target = Target(args.url, os.environ.get(args.api_key_env, "") if args.api_key_env else None)
    else:
        target = start_service(args.bundle)
    rows = []
    try:
        for name, expected, run in cases(args):
            started = time.perf_counter()
            try:
                observed, ok = run(target)
            except Exception as err:  # noqa: BLE001 - a case that crashes the client is a result, not the end
                observed, ok = f"client error: {type(err).__name__}: {err}"[:200], False
            rows.append({"case": name, "expected": expected, "observed": observed, "ok": ok,
                         "seconds": round(time.perf_counter() - started, 2)})
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {observed}", file=sys.stderr)
        alive = target.proc is None or target.proc.poll() is None
    finally:
        if target.proc is not None:
            target.proc.terminate()
            target.proc.wait(timeout=40)
    rows.append({"case": "service still up at the end", "expected": "yes", "observed": "yes" if alive else "no",
                 "ok": alive, "seconds": 0.0})
    result = {"benchmark": "hostile_requests", "command": "python benchmarks/hostile_requests.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),  # noqa: UP017 - py310 target
              "target": args.url or f"fenlei serve --bundle {os.path.relpath(args.bundle, REPO)} (default limits)",
              "machine": machine(), "smoke": args.smoke,
              "options": {"big_mb": args.big_mb, "texts_millions": args.texts_millions, "concurrent": args.concurrent},
              "passed": all(r["ok"] for r in rows), "rows": rows}
    atomic_write_json(args.out, result)
    print(table(rows))
    print(f"{sum(r['ok'] for r in rows)}/{len(rows)} cases as expected -> {args.out}", file=sys.stderr)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
