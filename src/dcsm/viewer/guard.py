"""What the viewer's server answers: only its page, only to requests addressed to it.

:class:`HostGuard` is a small ASGI middleware in front of Streamlit's application (no web framework
needed to import this module):

* **Host check.** A request (HTTP or WebSocket) whose ``Host`` header names another host is
  refused (HTTP 403; a WebSocket is closed before it opens). This stops DNS rebinding: a web
  page at ``evil.example`` whose name is made to resolve to 127.0.0.1 reaches the port, but its
  requests carry ``Host: evil.example``. The port is not compared, so an SSH tunnel from any
  local port works.
* **Nothing but the page.** Streamlit's extra endpoints (the metrics, the agent API, the login
  routes, the script health check, app static files) answer 404, and no other site may show
  the page in a frame (``X-Frame-Options`` and ``frame-ancestors``).

:func:`allowed_hosts` is what a server listening on an address accepts: ``localhost``,
``127.0.0.1`` and ``[::1]``, the address itself, and any name given; listening on all
addresses (``0.0.0.0``, ``::``) or on another machine's interface, also this machine's names
and any IP address (a literal address is never what DNS rebinding sends).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BLOCKED_PATHS", "HostGuard", "HostRule", "allowed_hosts", "host_name"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Path prefixes (under the server's base path) the viewer never serves.
BLOCKED_PATHS: tuple[str, ...] = (
    "/_stcore/metrics",
    "/_stcore/agent",
    "/_stcore/script-health-check",
    "/auth/",
    "/oauth2callback",
    "/app/static/",
)
#: Added to every HTTP answer: no other site may show the page in a frame (and talk to it).
_HEADERS = ((b"x-frame-options", b"SAMEORIGIN"),
            (b"content-security-policy", b"frame-ancestors 'self'"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"))
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class HostRule:
    """The host names a server accepts (lower case, no port, IPv6 without brackets), and
    whether any IP address literal is accepted too."""

    names: frozenset[str]
    any_address: bool = False

    def accepts(self, host: str | None) -> bool:
        """Whether a ``Host`` header value (``name``, ``name:port``, ``[v6]:port``) is one of
        ours; a missing or malformed one is not."""
        name = host_name(host)
        if name is None:
            return False
        if name in self.names:
            return True
        if self.any_address:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return False
            return True
        return False


def host_name(host: str | None) -> str | None:
    """The host of a ``Host`` header value, lower case, without the port, the trailing dot or
    IPv6 brackets; None when it is missing or malformed."""
    if not host:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or (host[end + 1:] and not _port(host[end + 1:])):
            return None
        name = host[1:end]
    else:
        name, sep, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        if sep and not _port(":" + port):
            return None
        name = name if sep else host
    name = name.rstrip(".")
    if not name or any(c in name for c in "/?#@ \t\\"):
        return None
    return name


def _port(text: str) -> bool:
    """``:<digits>`` with a port number."""
    return text.startswith(":") and text[1:].isdigit() and 0 < int(text[1:]) < 65536


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def allowed_hosts(address: str, extra: Iterable[str] = ()) -> HostRule:
    """The :class:`HostRule` of a server listening on ``address`` (module docstring); ``extra``:
    further names it is reached by (a reverse proxy's)."""
    served = host_name(address) or ""
    names = set(_LOOPBACK) | {n for n in (host_name(e) for e in extra) if n}
    wide = address.strip() in _WILDCARDS or not _is_loopback(served)
    if served and address.strip() not in _WILDCARDS:
        names.add(served)
    if wide:
        for name in (socket.gethostname(), socket.getfqdn()):
            own = host_name(name)
            if own:
                names.add(own)
    return HostRule(frozenset(names), any_address=wide)


class HostGuard:
    """ASGI middleware: refuse requests for other hosts and the paths in ``blocked`` (module
    docstring); everything else (and the lifespan events) goes to ``app``."""

    def __init__(self, app: ASGIApp, rule: HostRule, base_path: str = "",
                 blocked: Iterable[str] = BLOCKED_PATHS) -> None:
        self.app = app
        self.rule = rule
        base = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.blocked = tuple(base + p for p in blocked)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ASGI connection."""
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = None
        for key, value in scope.get("headers") or ():
            if key.lower() == b"host":
                host = value.decode("latin-1")
                break
        if not self.rule.accepts(host):
            await _refuse(scope, send, 403, "this server answers only requests for its own "
                                            "address (Host header refused)")
            return
        path = str(scope.get("path") or "")
        if any(path == p.rstrip("/") or path.startswith(p) for p in self.blocked):
            await _refuse(scope, send, 404, "not found")
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def framed_by_itself_only(message: Message) -> None:
            if message.get("type") == "http.response.start":
                headers = list(message.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _HEADERS if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, framed_by_itself_only)


async def _refuse(scope: Scope, send: Send, status: int, text: str) -> None:
    """An HTTP answer ``status`` with ``text``, or a WebSocket closed before it opens."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = (text + "\n").encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode("ascii"))]})
    await send({"type": "http.response.body", "body": body})
