"""Helpers for the service tests: the committed fixture bundle, a real uvicorn server in a thread, raw sockets.

The fixture bundle (tests/fixtures/layout_v0/bundle, 4 labels, max_length 32) loads in milliseconds and needs no
training run; the limits do not depend on what the model predicts.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.conftest import REPO_ROOT

FIXTURE_BUNDLE = REPO_ROOT / "tests" / "fixtures" / "layout_v0" / "bundle"
KEY = "test-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(app: Any, limits: Any) -> Iterator[int]:
    """``app`` served by uvicorn with fenlei's settings (fenlei.serving.protocol) on a free loopback port."""
    import uvicorn

    from fenlei.serving.protocol import uvicorn_config

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, limits, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the socket times out)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def status_of(reply: bytes) -> int | None:
    """The status code of a raw HTTP reply, None when there is none."""
    if not reply.startswith(b"HTTP/1.1 "):
        return None
    return int(reply.split(b" ", 2)[1])


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class FakePredictor:
    """Stands in for ``BundlePredictor`` behind a :class:`~fenlei.serving.batcher.Batcher`: row i of a text's
    probabilities encodes the text (its length), every batch is recorded, and ``gate`` (set by default) holds a
    batch until the test opens it."""

    max_length = 8

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.computing = threading.Event()  # set while a batch waits at the gate

    def predict_logits(self, texts: list[str], batch_size: int = 32) -> Any:
        import numpy as np

        return np.zeros((len(texts), 2), dtype=np.float32)

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> Any:
        import numpy as np

        self.batches.append(list(texts))
        self.computing.set()
        self.gate.wait(20)
        self.computing.clear()
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float64)

    def with_new_session(self, threads: int | None = None) -> FakePredictor:
        return self
