"""API-key authentication of the HTTP service, and the refusal to expose a service without one.

``fenlei serve --api_key_env NAME`` reads the key from the environment variable ``NAME`` (never from the command
line, where ``ps`` shows it). Clients send ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; the key is
compared with :func:`hmac.compare_digest` (constant time). :class:`APIKeyAuth` checks it before the body is read,
on every path except the open ones (``/health``, and the docs when ``--docs`` turns them on): deny by default,
so a route added later is protected too. A ``--host`` other than a loopback address without a key refuses to
start unless ``--allow_unauthenticated`` says so (:func:`check_exposure`).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable
from typing import Optional

from fenlei.errors import OptionError
from fenlei.serving.limits import ASGIApp, Receive, Scope, Send, send_error

OPEN_PATHS = frozenset({"/health"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def read_api_key(env_name: Optional[str]) -> Optional[str]:
    """The key held by environment variable ``env_name`` (None without one); an unset or empty variable is an error."""
    if env_name is None:
        return None
    key = os.environ.get(env_name, "")
    if not key.strip():
        raise OptionError(f"--api_key_env {env_name}: the environment variable {env_name} is not set or empty")
    return key


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost); a name is not trusted."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: Optional[str], allow_unauthenticated: bool) -> None:
    """Refuse to serve a non-loopback address without an API key unless that is explicitly allowed."""
    if api_key is None and not allow_unauthenticated and not is_loopback(host):
        raise OptionError(f"--host {host} is reachable from other machines and no API key is set: set "
                          "--api_key_env NAME (the key in that environment variable), or pass "
                          "--allow_unauthenticated to serve without one")


class APIKeyAuth:
    """ASGI middleware: 401 unless the request carries the key (paths in ``open_paths`` excepted)."""

    def __init__(self, app: ASGIApp, api_key: str, open_paths: Iterable[str] = OPEN_PATHS) -> None:
        self.app = app
        self.key = api_key.encode("utf-8")
        self.open_paths = frozenset(open_paths)

    def _presented(self, scope: Scope) -> list[bytes]:
        found = []
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                found.append(value[7:].strip())
            elif name == b"x-api-key":
                found.append(value.strip())
        return found

    def authorized(self, scope: Scope) -> bool:
        # Every presented value is compared (no early exit), each in constant time.
        results = [hmac.compare_digest(value, self.key) for value in self._presented(scope)]
        return any(results)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or self.authorized(scope):
            await self.app(scope, receive, send)
            return
        # close: the body (if any) is never read, so the connection cannot carry another request.
        await send_error(send, 401, "missing or wrong API key: send 'Authorization: Bearer <key>' or "
                                    "'X-API-Key: <key>'", headers=((b"www-authenticate", b"Bearer"),), close=True)
