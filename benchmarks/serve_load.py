"""Load and faults against `fenlei serve` over loopback, with the client in its own process: requests/s and latency
at several concurrency levels for several server settings (dynamic batching off and on, a pool of sessions, worker
processes), then the faults (a burst past the queue, clients that leave, SIGTERM under load).

    python benchmarks/serve_load.py                                   # the small committed fixture bundle
    python benchmarks/serve_load.py --bundle benchmarks/work/serve_minilm/bundle \\
        --texts data/demo_tickets/test.jsonl --name serve_load_minilm
    python benchmarks/serve_load.py --smoke                           # plumbing check, under a minute

Every setting is a fresh `fenlei serve` process (default limits, its --threads, --workers and batching options),
measured once it is ready in every worker (``fenlei_worker_processes`` and ``fenlei_ready`` in /metrics). Per level
the client process (this script with ``--client``) opens ``concurrency`` keep-alive connections (TCP_NODELAY set
and read back; the server's asyncio transports set it on every accepted socket) and sends ``--requests``
single-text requests (texts from ``--texts``, in file order, cycling: every level sends the same texts), after
``--warmup`` unmeasured ones that fill the pipeline, so the measured window starts at full concurrency. The
levels are measured ``--rounds`` times in turn (1, 4, 8, 16, 1, 4, 8, 16, ...), so each level's figure mixes the same
moments of a shared machine's load; a level's requests/s is its requests over its wall time summed over the rounds
(each round's figure is kept too), its p50/p95/p99 are over all its requests. Reported per level: requests/s,
latency percentiles, failures (any reply but 200, or a transport error), the mean texts per onnxruntime call (the
server's /metrics), and how many answers name the same label as the same text at concurrency 1 without batching
(INT8 activation scales are per batch). Target (issue 18): with batching, requests/s at concurrency 16 >= 3x the
concurrency-1 figure of the same setting, zero failures. The client shares the machine's cores with the server: on a
2-core machine the client's own work at concurrency 16 is taken from the server.

Before the service: the model alone (``model_costs``: onnxruntime in this process, batches of 1, 4, 8, 16 texts
cut from the same texts, at onnxruntime's default threads and at 1 thread), ms per call and per text: the bound on
what sharing calls can buy on this CPU (``--no_model`` skips it).

Faults, against the default setting: 64 clients at once with maximal requests (200 or 503 + Retry-After, never
500 or a timeout), 16 clients that send a request and close the connection while it queues (not computed:
``fenlei_rejected_total{reason="client_gone"}``), and SIGTERM while 16 clients are mid-request (every request the
server had accepted is answered 200, the process exits). Results: the tables on stdout and
``benchmarks/results/<name>.json`` (written atomically), with the date, CPU (model and VNNI/bf16/AMX flags) and
every command. ``--smoke``: levels 1 and 4, 40 requests, one round, two settings, results in
``benchmarks/results/smoke/`` marked smoke.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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

from benchmarks.common import burst, machine, maximal_body, positive_int, results_dir  # noqa: E402
from fenlei.io import atomic_write_json  # noqa: E402

DEFAULT_BUNDLE = REPO / "tests" / "fixtures" / "layout_v0" / "bundle"
RESULTS = REPO / "benchmarks" / "results"
# name -> extra `fenlei serve` options. "unbatched" is the service before batching: one session, every request
# its own onnxruntime call (max_batch_texts 1 also splits a request, but here every request has one text).
SETTINGS = {
    "unbatched": ["--max_batch_texts", "1"],
    "batched": [],
    "batched, 1 thread": ["--threads", "1"],
    "batched, 2 sessions x 1 thread": ["--max_concurrent", "2", "--threads", "1"],
    "batched, 2 workers x 1 thread": ["--workers", "2", "--threads", "1"],
}
SMOKE_SETTINGS = ["batched", "batched, 2 workers x 1 thread"]
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
    labels: list[tuple[int, str]] = []  # (text index, predicted label) of every measured 200
    failures: dict[str, int] = {}
    started: list[float] = []
    nodelay: list[bool] = []

    async def connection() -> None:
        reader = writer = None
        for i in counter:
            if i == 0:
                started.append(time.perf_counter())
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    nodelay.append(_no_delay(writer))
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
                labels.append((i % len(bodies), json.loads(body)["predictions"][0]["predicted_label"]))
            else:
                failures[str(status)] = failures.get(str(status), 0) + 1
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    wall = time.perf_counter() - (started[0] if started else time.perf_counter())
    return {"concurrency": concurrency, "requests": len(latencies), "failures": failures, "wall_s": wall,
            "latencies": latencies, "labels": labels, "tcp_nodelay": bool(nodelay) and all(nodelay)}


def _no_delay(writer: asyncio.StreamWriter) -> bool:
    """Set TCP_NODELAY on the client's socket (asyncio does by default; set here so that no event loop swap can
    bring Nagle's algorithm back) and read it back."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def percentile_ms(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One level's figures over its rounds: requests over summed wall time, percentiles over every request."""
    latencies = [x for r in rounds for x in r["latencies"]]
    failures: dict[str, int] = {}
    for r in rounds:
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
    labels = [(int(i), label) for r in rounds for i, label in r["labels"]]
    return {"concurrency": rounds[0]["concurrency"], "requests": len(latencies), "failed": sum(failures.values()),
            "failures": failures, "requests_per_s": round(len(latencies) / sum(r["wall_s"] for r in rounds), 1),
            "requests_per_s_rounds": [round(r["requests"] / r["wall_s"], 1) for r in rounds],
            "p50_ms": percentile_ms(latencies, 0.50), "p95_ms": percentile_ms(latencies, 0.95),
            "p99_ms": percentile_ms(latencies, 0.99), "tcp_nodelay": all(r["tcp_nodelay"] for r in rounds),
            "labels": labels}


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
    """One `fenlei serve` process (with ``--workers N``: N of them on one port) on a free port."""

    def __init__(self, bundle: Path, options: list[str]) -> None:
        self.port = _free_port()
        self.workers = int(options[options.index("--workers") + 1]) if "--workers" in options else 1
        self.command = [sys.executable, "cli.py", "serve", "--bundle", str(bundle), "--port", str(self.port),
                        "--log_level", "warning", *options]
        self.proc = subprocess.Popen(self.command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        import httpx

        # Ready means every worker: one worker's /ready answers for itself only, so /metrics must show all of them
        # built (fenlei_worker_processes) and warm (fenlei_ready, the minimum over the workers).
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                text = _get(self.port, "/metrics", 2)[1]
                if self.metric("fenlei_worker_processes", text) == self.workers and self.metric("fenlei_ready", text) == 1:
                    self.limits = json.loads(_get(self.port, "/metadata")[1])["limits"]
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"`{shlex.join(self.command)}` did not get ready: {self.proc.stderr.read()[-2000:]}")

    def metric(self, name: str, text: str | None = None) -> float:
        text = text if text is not None else _get(self.port, "/metrics")[1]
        found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def wait_queue(self, requests: int, seconds: float = 10) -> None:
        """Until at least ``requests`` requests wait for a batch (or ``seconds`` pass)."""
        deadline = time.monotonic() + seconds
        while self.metric("fenlei_queue_requests") < requests and time.monotonic() < deadline:
            time.sleep(0.005)

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
    command = [sys.executable, str(Path(__file__).resolve()), "--client", "--port", str(port), "--concurrency",
               str(concurrency),
               "--requests", str(args.requests), "--warmup", str(args.warmup), "--max_texts", str(args.max_texts)]
    if args.texts is not None:
        command += ["--texts", str(args.texts)]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)


def load(bundle: Path, name: str, options: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Every level of one setting, ``args.rounds`` times in turn, against one fresh service."""
    service = Service(bundle, options)
    rounds: dict[int, list[dict[str, Any]]] = {c: [] for c in args.levels}
    calls = dict.fromkeys(args.levels, 0.0)
    texts = dict.fromkeys(args.levels, 0.0)
    try:
        for _ in range(args.rounds):
            for concurrency in args.levels:
                before = _get(service.port, "/metrics")[1]
                rounds[concurrency].append(run_client(service.port, concurrency, args))
                after = _get(service.port, "/metrics")[1]
                for total, metric in ((calls, "fenlei_batch_texts_count"), (texts, "fenlei_batch_texts_sum")):
                    total[concurrency] += service.metric(metric, after) - service.metric(metric, before)
    finally:
        service.stop()
    levels = []
    for concurrency in args.levels:
        level = pooled(rounds[concurrency])
        # The warm-up requests are computed too: texts per call is over every request of the level.
        level["texts_per_call"] = round(texts[concurrency] / calls[concurrency], 2) if calls[concurrency] else None
        levels.append(level)
        print(f"{name}: concurrency {concurrency}: {level['requests_per_s']} req/s {level['requests_per_s_rounds']}, "
              f"p50 {level['p50_ms']} ms, p95 {level['p95_ms']} ms, {level['failed']} failed, "
              f"{level['texts_per_call']} texts per call", file=sys.stderr)
    server = {k: service.limits.get(k) for k in ("max_batch_texts", "batch_wait_ms", "max_concurrent", "threads")}
    server["workers"] = service.workers
    return {"setting": name, "command": shlex.join(["fenlei", *service.command[2:]]), "server": server,
            "levels": levels}


# ---------------------------------------------------------------------------------------------- the model alone

def model_costs(bundle: Path, texts: list[str], sizes: list[int], threads: list[int | None], n: int = 192,
                repeats: int = 3) -> list[dict[str, Any]]:
    """onnxruntime alone, in this process (no HTTP, no server): ms per call and per text at each batch size, the
    batches cut from ``texts`` in order as the server's would be (mixed lengths, padded to the longest). What
    batching can buy is bounded here: when a text costs as much in a batch of 8 as alone, sharing calls cannot
    raise requests/s, whatever the HTTP side does. Median of ``repeats`` passes over ``n`` texts per size."""
    import statistics

    from fenlei.serving.predictor import BundlePredictor

    out = []
    for th in threads:
        predictor = BundlePredictor(bundle, intra_op_threads=th)
        predictor.predict_proba(texts[:max(sizes)], batch_size=max(sizes))  # warm-up (buffers, first-run costs)
        for size in sizes:
            batches = [[texts[(i + j) % len(texts)] for j in range(size)] for i in range(0, n, size)]
            passes = []
            for _ in range(repeats):
                started = time.perf_counter()
                for batch in batches:
                    predictor.predict_proba(batch, batch_size=size)
                passes.append(time.perf_counter() - started)
            seconds = statistics.median(passes)
            out.append({"threads": th, "batch": size, "ms_per_call": round(1000 * seconds / len(batches), 2),
                        "ms_per_text": round(1000 * seconds / (len(batches) * size), 2),
                        "texts_per_s": round(len(batches) * size / seconds, 1)})
            print(f"model alone, threads {th or 'ORT default'}, batch {size}: {out[-1]['ms_per_call']} ms per call, "
                  f"{out[-1]['ms_per_text']} ms per text", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------------- faults

def fault_burst(bundle: Path) -> dict[str, Any]:
    """64 clients at once, each with a maximal request: 200 or 503 + Retry-After, nothing else."""
    service = Service(bundle, [])
    try:
        limits = json.loads(_get(service.port, "/metadata")[1])["limits"]
        counts, seconds = burst(f"http://127.0.0.1:{service.port}/predict", maximal_body(limits), 64)
        rejected = service.metric('fenlei_rejected_total{reason="queue_full"}')
    finally:
        service.stop()
    ok = set(counts) <= {"200", "503+retry-after"} and "200" in counts
    return {"case": "64 concurrent maximal requests", "expected": "200 or 503 + Retry-After only",
            "observed": f"{counts} in {seconds:.1f} s; /metrics queue_full {rejected:g}", "ok": ok}


def fault_leavers(bundle: Path) -> dict[str, Any]:
    """16 clients queue a big request behind a busy model and hang up: none of them is computed.

    A queued request notices its client has gone within 0.25 s (fenlei.serving.admission.POLL_S), so the backlog
    ahead of the leavers must outlast that: the service computes every text alone (``--max_batch_texts 1``, one
    thread) and gets as many busy requests as make about 1.5 s of work, from the time one of them takes (a tiny
    model needs dozens, MiniLM two; ``--max_queue`` leaves room for them). On a fast model with a fixed handful of
    busy requests, the leavers were computed before anyone could notice they had left."""
    import httpx

    service = Service(bundle, ["--max_batch_texts", "1", "--threads", "1", "--max_queue", "128"])
    url = f"http://127.0.0.1:{service.port}/predict"
    big = {"texts": ["refund my card please " * 90] * 64}
    body = json.dumps(big).encode()
    busy: list[socket.socket] = []
    socks: list[socket.socket] = []
    try:
        started = time.perf_counter()
        httpx.post(url, json=big, timeout=120)
        n_busy = max(2, min(64, int(1.5 / (time.perf_counter() - started)) + 1))
        before = service.metric("fenlei_predictions_total")
        for _ in range(n_busy):  # raw sockets: sent at once, their replies read at the end
            s = socket.create_connection(("127.0.0.1", service.port))
            s.sendall(_request(body))
            busy.append(s)
        # Polled, not slept: a leaver must queue behind the busy requests, and one closed before the server read
        # it never queued at all.
        service.wait_queue(1)
        for _ in range(16):
            s = socket.create_connection(("127.0.0.1", service.port))
            s.sendall(_request(body))
            socks.append(s)
        service.wait_queue(17)  # every leaver queued, and at least one busy request still ahead of them
        for s in socks:
            s.close()
        answered = 0
        for s in busy:
            s.settimeout(120)
            reply = b""
            while b"\r\n\r\n" not in reply and (chunk := s.recv(65536)):
                reply += chunk
            answered += reply.startswith(b"HTTP/1.1 200")
        time.sleep(0.6)  # the leavers still queued notice within 0.25 s
        text = _get(service.port, "/metrics")[1]
        gone = service.metric('fenlei_rejected_total{reason="client_gone"}', text)
        computed = service.metric("fenlei_predictions_total", text) - before
    finally:
        for s in busy + socks:
            s.close()
        service.stop()
    not_computed = computed <= n_busy * 64 + 64  # the busy ones, and at most one leaver caught mid-request
    return {"case": "16 clients hang up while queued", "expected": "not computed (client_gone in /metrics)",
            "observed": f"client_gone {gone:g} of 16; {computed:g} texts computed for the {n_busy} busy requests "
                        f"({answered} answered 200, {n_busy * 64} texts)", "ok": gone >= 15 and not_computed}


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
    """Each level's share of answers naming the label of the same text in the reference (unbatched, c1)."""
    for level in levels:
        same = [label == reference[i] for i, label in level.pop("labels") if i in reference]
        level["label_agreement_vs_unbatched_c1"] = round(sum(same) / len(same), 4) if same else None


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--texts", type=Path, help="JSONL with a 'text' field (default: short built-in texts)")
    parser.add_argument("--max_texts", type=positive_int, default=2000, help="texts read from --texts")
    parser.add_argument("--levels", type=positive_int, nargs="+", default=[1, 4, 8, 16], help="concurrency levels")
    parser.add_argument("--requests", type=positive_int, default=600, help="measured requests per level and round")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests before each level")
    parser.add_argument("--rounds", type=positive_int, default=2, help="times every level is measured, in turn")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=None,
                        help="server settings (default: all; --smoke: " + ", ".join(SMOKE_SETTINGS) + ")")
    parser.add_argument("--no_faults", action="store_true", help="skip the fault cases")
    parser.add_argument("--no_model", action="store_true", help="skip the model-alone costs per batch size")
    parser.add_argument("--name", default="serve_load", help="results file benchmarks/results/NAME.json")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results[/smoke]/NAME.json)")
    parser.add_argument("--smoke", action="store_true", help="plumbing check: levels 1 and 4, 40 requests, 1 round")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return client_main(args)
    if args.smoke:
        args.levels, args.requests, args.warmup, args.rounds = [1, 4], min(args.requests, 40), 5, 1
    args.settings = args.settings or (SMOKE_SETTINGS if args.smoke else list(SETTINGS))
    if 1 not in args.levels:
        parser.error("--levels must include 1 (the baseline of the target)")
    out = args.out or results_dir(args.smoke) / f"{args.name}.json"
    began = time.perf_counter()
    command = shlex.join(["python", "benchmarks/serve_load.py", *(argv if argv is not None else sys.argv[1:])])
    model = [] if args.no_model else model_costs(args.bundle, read_texts(args.texts, args.max_texts),
                                                 [1, 4, 8, 16] if not args.smoke else [1, 4], [None, 1],
                                                 n=192 if not args.smoke else 16, repeats=3 if not args.smoke else 1)
    settings = [load(args.bundle, name, SETTINGS[name], args) for name in args.settings]
    base = dict(reversed(settings[0]["levels"][0]["labels"]))  # the first setting at concurrency 1: first answer
    for s in settings:
        agreement(s["levels"], base)
        rps = {lv["concurrency"]: lv["requests_per_s"] for lv in s["levels"]}
        s["ratio_top_over_c1"] = round(rps[max(args.levels)] / rps[1], 2)
        s["failed"] = sum(lv["failed"] for lv in s["levels"])
    top = max(args.levels)
    batched = [s for s in settings if s["setting"] != "unbatched"]
    best = max(batched or settings, key=lambda s: s["ratio_top_over_c1"])
    fastest = max(batched or settings, key=lambda s: max(lv["requests_per_s"] for lv in s["levels"]
                                                         if lv["concurrency"] == top))
    targets = {f"c{top}_over_c1_ge_{TARGET_RATIO:g}x": best["ratio_top_over_c1"] >= TARGET_RATIO,
               "zero_failures": all(s["failed"] == 0 for s in settings)}
    faults = [] if args.no_faults else [fault_burst(args.bundle), fault_leavers(args.bundle), fault_sigterm(args.bundle)]
    for f in faults:
        print(f"{'ok  ' if f['ok'] else 'FAIL'} {f['case']}: {f['observed']}", file=sys.stderr)
    result = {"benchmark": args.name, "command": command, "smoke": args.smoke,
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),  # noqa: UP017 - py310 target
              "machine": {**machine(), "cores_usable": cpu_cores()},
              "bundle": os.path.relpath(args.bundle, REPO), "texts": str(args.texts) if args.texts else "built-in",
              "requests_per_level": args.requests, "warmup": args.warmup, "rounds": args.rounds,
              "levels": args.levels, "client": "asyncio, one process, keep-alive, TCP_NODELAY",
              "model_alone": model, "settings": settings, "best_setting": best["setting"],
              "fastest_setting_at_top": fastest["setting"], "targets": targets,
              "target_values": {f"c{top}_over_c1_ge_{TARGET_RATIO:g}x": best["ratio_top_over_c1"]},
              "faults": faults, "wall_s": round(time.perf_counter() - began, 1)}
    atomic_write_json(out, result)
    for s in settings:
        print(f"{s['setting']}: c{top}/c1 = {s['ratio_top_over_c1']}x, failures {s['failed']}", file=sys.stderr)
    print(f"-> {out}", file=sys.stderr)
    return 0 if all(f["ok"] for f in faults) else 1


if __name__ == "__main__":
    sys.exit(main())
