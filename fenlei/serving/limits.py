"""The HTTP service's limits, and the ASGI middleware that enforces the body ones before anything is parsed.

:class:`ServiceLimits` gathers every limit (``fenlei serve`` options, documented in docs/deployment.md).
:class:`BodyLimit` reads each request body itself, up to ``max_body_bytes`` and within ``body_timeout`` seconds,
then hands it to the app: a declared ``Content-Length`` over the cap is answered 413 before one byte of the body
is read, a body without one (chunked) is counted while it streams and cut off at the cap, and a body that stops
arriving (a short ``Content-Length``, a client that trickles) is answered 408. These replies close the connection,
so the server stops reading what the client still sends. Why not FastAPI's own ``max_body_size``: it answers 413
but keeps the connection, so uvicorn goes on reading (and discarding) the rest of a 100 MB upload, and it has no
timeout. The arrival time of every request lands in its scope (:data:`ARRIVAL_KEY`) for the request deadline.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

from fenlei.errors import OptionError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ARRIVAL_KEY = "fenlei.arrival"  # time.monotonic() at which the request head was complete (the batcher's clock)


@dataclass(frozen=True)
class ServiceLimits:
    """Limits of ``fenlei serve``; the defaults follow TorchServe's (a few MB per request, a bounded job queue).

    Attributes:
        max_body_bytes: largest request body accepted (413 above it)
        header_timeout: seconds a client has to send a complete request head (then the connection is closed)
        body_timeout: seconds a client has to send the whole body once the head is in (408 after)
        keep_alive_timeout: seconds an idle keep-alive connection stays open
        request_timeout: seconds from arrival within which a request must start and finish computing (503 after)
        max_queue: requests that may wait for a batch (503 with Retry-After beyond)
        max_concurrent: batches computed at once, each on an onnxruntime session of its own
        max_connections: open connections and in-flight requests (uvicorn answers 503 beyond)
    """

    max_body_bytes: int = 1_000_000
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    request_timeout: float = 30.0
    max_queue: int = 32
    max_concurrent: int = 1
    max_connections: int = 256

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            low = 0 if field.name == "max_queue" else 1  # a queue of 0: refuse whatever cannot start at once
            if field.type == "int":
                ok, wanted = isinstance(value, int) and not isinstance(value, bool) and value >= low, f"an integer >= {low}"
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
                wanted = "a finite number of seconds > 0"
            if not ok:
                raise OptionError(f"--{field.name} must be {wanted}, got {value!r}")


async def send_error(send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = (),
                     close: bool = False) -> None:
    """A JSON ``{"detail": ...}`` reply sent straight from a middleware (the app never sees the request)."""
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    if close:  # uvicorn then closes the connection after the reply instead of reading the rest of the body
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, None when absent; -1 when it is not a plain non-negative integer."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


class BodyLimit:
    """Read the whole body (at most ``max_bytes``, within ``timeout`` seconds) before the app runs; see the module."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        scope[ARRIVAL_KEY] = time.monotonic()
        declared = declared_length(scope)
        if declared == -1:
            await send_error(send, 400, "Content-Length is not a non-negative integer", close=True)
            return
        if declared is not None and declared > self.max_bytes:
            await send_error(send, 413, self._too_large(), close=True)
            return
        body = bytearray()
        deadline = loop.time() + self.timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                await send_error(send, 408, f"request body not received within {self.timeout:g} s", close=True)
                return
            if message["type"] == "http.disconnect":
                return  # the client left: nothing to answer, nothing to compute
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await send_error(send, 413, self._too_large(), close=True)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    def _too_large(self) -> str:
        return f"request body larger than {self.max_bytes} bytes (the service's --max_body_bytes)"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the buffered body once, then the server's own messages (so disconnects still arrive)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
