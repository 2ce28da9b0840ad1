"""Load and faults against `fenlei serve` over loopback, with the client in its own process: requests/s and latency
at several concurrency levels for several server settings (dynamic batching off and on, a pool of sessions), then
the faults (a burst past the queue, clients that leave, SIGTERM under load).

    python benchmarks/serve_load.py                                   # the small committed fixture bundle
    python benchmarks/serve_load.py --bundle benchmarks/work/serve_minilm/bundle \\
        --texts data/demo_tickets/test.jsonl --name serve_load_minilm

Every setting is a fresh `fenlei serve` process (default limits, its --threads and batching options); per level
the client process (this script with ``--client``) opens ``concurrency`` keep-alive connections and sends
``--requests`` single-text requests (texts from ``--texts``, in file order, cycling), after ``--warmup`` unmeasured
ones. Reported per level: requests/s, p50/p95/p99 latency, failures (any reply but 200, or a transport error), the
mean texts per onnxruntime call (the server's /metrics), and how many answers at that level name the same label
as the same text at concurrency 1 without batching (INT8 activation scales are per batch). Target (issue 18):
with batching, requests/s at concurrency 16 >= 3x the concurrency-1 figure of the same setting, zero failures.

Faults, against the default setting: 64 clients at once with maximal requests (200 or 503 + Retry-After, never
500 or a timeout), 16 clients that send a request and close the connection while it queues (not computed:
``fenlei_rejected_total{reason="client_gone"}``), and SIGTERM while 16 clients are mid-request (every request the
server had accepted is answered 200, the process exits). Results: the tables on stdout and
``benchmarks/results/<name>.json`` (written atomically), with the date, CPU (model and VNNI/bf16/AMX flags) and
every command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fenlei.cpu import cpu_record  # noqa: E402
from fenlei.io import atomic_write_json  # noqa: E402

DEFAULT_BUNDLE = REPO / "tests" / "fixtures" / "layout_v0" / "bundle"
RESULTS = REPO / "benchmarks" / "results"
# name -> extra `fenlei serve` options. "unbatched" is the service before batching: one session, every request
# its own onnxruntime call (max_batch_texts 1 also splits a request, but here every request has one text).
SETTINGS = {
    "unbatched": ["--max_batch_texts", "1"],
    "batched": [],
    "batched, 2 sessions x 1 thread": ["--max_concurrent", "2", "--threads", "1"],
}
TARGET_RATIO = 3.0


# ---------------------------------------------------------------------------------------------- the client process

def _request(body: bytes) -> bytes:
    return (b"POST /predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body))


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body, and whether the server keeps the connection."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split(b" ", 2)[1])
    length, keep = 0, True
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
    return status, await reader.readexactly(length), keep


async def _client(port: int, concurrency: int, bodies: list[bytes], n: int, warmup: int) -> dict[str, Any]:
    """``n`` measured requests (after ``warmup``) over ``concurrency`` keep-alive connections."""
    counter = iter(range(-warmup, n))
    latencies: list[float] = []
    labels: dict[int, str] = {}
    failures: dict[str, int] = {}
    started: list[float] = []

    async def connection() -> None:
        reader = writer = None
        for i in counter:
            if i == 0:
                started.append(time.perf_counter())
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(_request(bodies[i % len(bodies)]))
                status, body, keep = await _read_reply(reader)
                if not keep:
                    writer.close()
                    reader = writer = None
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError) as err:
                status, body = type(err).__name__, b""
                if writer is not None:
                    writer.close()
                reader = writer = None
            if i < 0:
                continue
            latencies.append(time.perf_counter() - t0)
            if status == 200:
                labels[i] = json.loads(body)["predictions"][0]["predicted_label"]
            else:
                failures[str(status)] = failures.get(str(status), 0) + 1
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    wall = time.perf_counter() - (started[0] if started else time.perf_counter())
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)

    return {"concurrency": concurrency, "requests": len(latencies), "failed": sum(failures.values()),
            "failures": failures, "requests_per_s": round(len(latencies) / wall, 1), "p50_ms": pct(0.50),
            "p95_ms": pct(0.95), "p99_ms": pct(0.99), "labels": labels}


def client_main(args: argparse.Namespace) -> int:
    texts = read_texts(args.texts, args.max_texts)
    bodies = [json.dumps({"text": t}, ensure_ascii=False).encode() for t in texts]
    result = asyncio.run(_client(args.port, args.concurrency, bodies, args.requests, args.warmup))
    json.dump(result, sys.stdout)
    return 0


# ---------------------------------------------------------------------------------------------- the server side

def read_texts(path: Path | None, limit: int) -> list[str]:
    if path is None:
        words = ["refund", "my", "card", "please", "the", "courier", "is", "late", "again", "screen", "freeze",
                 "crash", "password", "reset"]
        return [" ".join(words[i % 7:i % 7 + 2 + i % 9]) for i in range(200)]
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
            if len(texts) >= limit:
                break
    return texts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, timeout: float = 5) -> tuple[int, str]:
    import httpx

    r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout)
    return r.status_code, r.text


class Service:
    """One `fenlei serve` process on a free port."""

    def __init__(self, bundle: Path, options: list[str]) -> None:
        self.port = _free_port()
        self.command = [sys.executable, "cli.py", "serve", "--bundle", str(bundle), "--port", str(self.port),
                        "--log_level", "warning", *options]
        self.proc = subprocess.Popen(self.command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if _get(self.port, "/ready", 1)[0] == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"`{shlex.join(self.command)}` did not get ready: {self.proc.stderr.read()[-2000:]}")

    def metric(self, name: str, text: str | None = None) -> float:
        text = text if text is not None else _get(self.port, "/metrics")[1]
        found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def run_client(port: int, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--client", "--port", str(port), "--concurrency", str(concurrency),
               "--requests", str(args.requests), "--warmup", str(args.warmup), "--max_texts", str(args.max_texts)]
    if args.texts is not None:
        command += ["--texts", str(args.texts)]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)


def load(bundle: Path, name: str, options: list[str], args: argparse.Namespace) -> dict[str, Any]:
    service = Service(bundle, options)
    try:
        levels = []
        for concurrency in args.levels:
            before = _get(service.port, "/metrics")[1]
            level = run_client(service.port, concurrency, args)
            after = _get(service.port, "/metrics")[1]
            calls = service.metric("fenlei_batch_texts_count", after) - service.metric("fenlei_batch_texts_count", before)
            texts = service.metric("fenlei_batch_texts_sum", after) - service.metric("fenlei_batch_texts_sum", before)
            level["texts_per_call"] = round(texts / calls, 2) if calls else None
            levels.append(level)
            print(f"{name}: concurrency {concurrency}: {level['requests_per_s']} req/s, p95 {level['p95_ms']} ms, "
                  f"{level['failed']} failed, {level['texts_per_call']} texts per call", file=sys.stderr)
    finally:
        service.stop()
    return {"setting": name, "command": shlex.join(["fenlei", *service.command[3:]]), "levels": levels}


# ---------------------------------------------------------------------------------------------- faults

def fault_burst(bundle: Path) -> dict[str, Any]:
    """64 clients at once, each with a maximal request: 200 or 503 + Retry-After, nothing else."""
    import httpx

    service = Service(bundle, [])
    try:
        limits = json.loads(_get(service.port, "/metadata")[1])["limits"]
        word = "refund my card please "
        text = (word * (limits["max_chars"] // len(word) + 1))[: limits["max_chars"]]
        body = {"texts": [text] * limits["max_items"]}
        outcomes: list[str] = []
        lock = threading.Lock()

        def call() -> None:
            try:
                r = httpx.post(f"http://127.0.0.1:{service.port}/predict", json=body, timeout=90)
                outcome = f"{r.status_code}" + ("+retry-after" if "retry-after" in r.headers else "")
            except httpx.HTTPError as err:
                outcome = type(err).__name__
            with lock:
                outcomes.append(outcome)

        started = time.perf_counter()
        threads = [threading.Thread(target=call) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
        counts = {k: outcomes.count(k) for k in sorted(set(outcomes))}
        rejected = service.metric('fenlei_rejected_total{reason="queue_full"}')
    finally:
        service.stop()
    ok = set(counts) <= {"200", "503+retry-after"} and "200" in counts
    return {"case": "64 concurrent maximal requests", "expected": "200 or 503 + Retry-After only",
            "observed": f"{counts} in {seconds:.1f} s; /metrics queue_full {rejected:g}", "ok": ok}


def fault_leavers(bundle: Path) -> dict[str, Any]:
    """16 clients queue a big request behind a busy model and hang up: none of them is computed."""
    import httpx

    service = Service(bundle, [])
    try:
        url = f"http://127.0.0.1:{service.port}/predict"
        big = {"texts": ["refund my card please " * 90] * 64}
        busy = [threading.Thread(target=lambda: httpx.post(url, json=big, timeout=60)) for _ in range(4)]
        for t in busy:
            t.start()
        time.sleep(0.05)
        body = json.dumps(big).encode()
        socks = []
        for _ in range(16):
            s = socket.create_connection(("127.0.0.1", service.port))
            s.sendall(_request(body))
            socks.append(s)
        time.sleep(0.05)
        for s in socks:
            s.close()
        for t in busy:
            t.join()
        time.sleep(0.6)  # a queued request notices its client within 0.25 s
        text = _get(service.port, "/metrics")[1]
        gone = service.metric('fenlei_rejected_total{reason="client_gone"}', text)
        computed = service.metric("fenlei_predictions_total", text)
    finally:
        service.stop()
    not_computed = computed <= 4 * 64 + 64  # the busy ones, and at most one leaver caught mid-batch
    return {"case": "16 clients hang up while queued", "expected": "not computed (client_gone in /metrics)",
            "observed": f"client_gone {gone:g} of 16; {computed:g} texts computed for the 4 that stayed "
                        f"({4 * 64} texts)", "ok": gone >= 15 and not_computed}


def fault_sigterm(bundle: Path) -> dict[str, Any]:
    """SIGTERM while 16 clients are mid-request: every request the server was handling is answered 200.

    After the signal the server takes no new connection and closes idle keep-alive ones; a request sent on such a
    connection gets "disconnected without sending a response" (it was never accepted): counted apart, not as a
    failure. A failure is any other error, or a reply but 200."""
    import httpx

    service = Service(bundle, [])
    url = f"http://127.0.0.1:{service.port}/predict"
    outcomes: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                try:
                    outcome = str(c.post(url, json={"texts": ["refund my card please " * 20] * 16}).status_code)
                except (httpx.ConnectError, httpx.RemoteProtocolError) as err:
                    outcome = "not accepted (shutting down)" if stop.is_set() else type(err).__name__
                except httpx.HTTPError as err:
                    outcome = type(err).__name__
                with lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    in_flight = _get(service.port, "/metrics")[1]
    queued = service.metric("fenlei_queue_requests", in_flight)
    sent_at = time.perf_counter()
    stop.set()
    service.proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        service.proc.wait(timeout=60)
    exit_s = time.perf_counter() - sent_at
    for t in threads:
        t.join(timeout=60)
    code = service.stop()
    counts = {k: outcomes.count(k) for k in sorted(set(outcomes))}
    ok = set(counts) <= {"200", "not accepted (shutting down)"} and code in (0, -signal.SIGTERM)
    return {"case": "SIGTERM under load (16 clients, 16 texts each)",
            "expected": "every request being handled answered 200, then exit",
            "observed": f"{counts} ({queued:g} queued just before the signal); exited {code} {exit_s:.2f} s after "
                        "SIGTERM", "ok": ok}


# ---------------------------------------------------------------------------------------------- main

def agreement(levels: list[dict[str, Any]], reference: dict[int, str]) -> None:
    for level in levels:
        labels = level.pop("labels")
        same = [labels[i] == reference[i] for i in labels if i in reference]
        level["label_agreement_vs_unbatched_c1"] = round(sum(same) / len(same), 4) if same else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--texts", type=Path, help="JSONL with a 'text' field (default: short built-in texts)")
    parser.add_argument("--max_texts", type=int, default=2000, help="texts read from --texts")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    parser.add_argument("--requests", type=int, default=600, help="measured requests per level")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests before each level")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--no_faults", action="store_true", help="skip the fault cases")
    parser.add_argument("--name", default="serve_load", help="results file benchmarks/results/NAME.json")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return client_main(args)
    if 1 not in args.levels:
        parser.error("--levels must include 1 (the baseline of the target)")
    command = shlex.join(["python", "benchmarks/serve_load.py", *(argv if argv is not None else sys.argv[1:])])
    settings = []
    for name in args.settings:
        settings.append(load(args.bundle, name, SETTINGS[name], args))
    base = settings[0]["levels"][0]["labels"]  # the first setting at concurrency 1
    for s in settings:
        agreement(s["levels"], base)
        rps = {lv["concurrency"]: lv["requests_per_s"] for lv in s["levels"]}
        top = max(args.levels)
        s["ratio_top_over_c1"] = round(rps[top] / rps[1], 2)
        s["failed"] = sum(lv["failed"] for lv in s["levels"])
    top = max(args.levels)
    batched = [s for s in settings if s["setting"] != "unbatched"]
    best = max(batched or settings, key=lambda s: s["ratio_top_over_c1"])
    targets = {f"c{top}_over_c1_ge_{TARGET_RATIO:g}x": best["ratio_top_over_c1"] >= TARGET_RATIO,
               "zero_failures": all(s["failed"] == 0 for s in settings)}
    faults = [] if args.no_faults else [fault_burst(args.bundle), fault_leavers(args.bundle), fault_sigterm(args.bundle)]
    for f in faults:
        print(f"{'ok  ' if f['ok'] else 'FAIL'} {f['case']}: {f['observed']}", file=sys.stderr)
    result = {"benchmark": args.name, "command": command,
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),  # noqa: UP017 - py310 target
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu": cpu_record()},
              "bundle": os.path.relpath(args.bundle, REPO), "texts": str(args.texts) if args.texts else "built-in",
              "requests_per_level": args.requests, "warmup": args.warmup, "levels": args.levels,
              "settings": settings, "best_setting": best["setting"], "targets": targets,
              "target_values": {f"c{top}_over_c1_ge_{TARGET_RATIO:g}x": best["ratio_top_over_c1"]},
              "faults": faults}
    atomic_write_json(RESULTS / f"{args.name}.json", result)
    for s in settings:
        print(f"{s['setting']}: c{top}/c1 = {s['ratio_top_over_c1']}x, failures {s['failed']}", file=sys.stderr)
    print(f"-> {RESULTS / (args.name + '.json')}", file=sys.stderr)
    return 0 if all(f["ok"] for f in faults) else 1


if __name__ == "__main__":
    sys.exit(main())
