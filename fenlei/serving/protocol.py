"""uvicorn settings of the service, and an HTTP protocol with a request-head timeout.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but has no timeout for a request head that
arrives slowly: 40 connections sending a header byte every few seconds stayed open for as long as they liked
(slowloris). :func:`timed_h11_protocol` subclasses uvicorn's h11 protocol so that a connection must deliver a
complete request head within ``header_timeout`` seconds of opening (or of its previous response); otherwise it
gets a 408 and is closed. The body timeout and size cap are ASGI middleware (fenlei.serving.limits).

Worker processes (``fenlei serve --workers N``, fenlei.serving.workers) get uvicorn's configuration pickled, and a
class made inside a function cannot be: they name ``fenlei.serving.protocol:HeadTimeoutH11Protocol`` instead (a
module attribute, built on first use), whose ``header_timeout`` each worker sets from its own options.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fenlei.serving.limits import ServiceLimits

_TIMEOUT_BODY = b"request head not received in time\n"
REQUEST_TIMEOUT_REPLY = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                         b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


def timed_h11_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a deadline for each request head (see the module docstring)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeoutH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        header_timeout: float = 0.0  # set below; read at every head, so a worker may set it after the import

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            waiting_for_head = self.cycle is None or self.cycle.response_complete
            if waiting_for_head and not self.transport.is_closing():
                # Written raw and then closed: h11's state machine is not used again on this connection.
                self.transport.write(REQUEST_TIMEOUT_REPLY)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a complete request head arrived
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # The next head (on a kept-alive connection) gets the same deadline; a pipelined one already arrived.
            if not self.transport.is_closing() and self.cycle is not None and self.cycle.response_complete:
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    HeadTimeoutH11Protocol.header_timeout = header_timeout
    return HeadTimeoutH11Protocol


_shared: dict[str, type[asyncio.Protocol]] = {}


def __getattr__(name: str) -> Any:
    """``HeadTimeoutH11Protocol``: the protocol class uvicorn's worker processes import by name (built on first use:
    importing this module must not need uvicorn); its ``header_timeout`` starts at the service's default."""
    if name != "HeadTimeoutH11Protocol":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _shared:
        _shared[name] = timed_h11_protocol(ServiceLimits().header_timeout)
    return _shared[name]


def server_settings(limits: ServiceLimits) -> dict[str, Any]:
    """The ``uvicorn.Config`` options of the service's limits, the same for one process and for several."""
    # access_log off: fenlei.serving.telemetry writes the access lines, with the request id.
    return {"access_log": False, "timeout_keep_alive": limits.keep_alive_timeout,
            "limit_concurrency": limits.max_connections,
            # SIGTERM: no new connections; the requests in flight (queued or in a batch) may finish within their
            # own deadline, then the app's shutdown stops the batcher's workers.
            "timeout_graceful_shutdown": int(limits.request_timeout) + 1}


def uvicorn_config(app: Any, host: str, port: int, limits: ServiceLimits, log_level: str = "info") -> Any:
    """The ``uvicorn.Config`` of ``fenlei serve`` (tests start the same server in a thread)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1,
                          http=timed_h11_protocol(limits.header_timeout), **server_settings(limits))
