"""The service's ASGI guard: what every request passes before the app sees it.

Bearer tokens (``Authorization: Bearer <token>``) on ``/v1`` and ``/metrics``: 401 without one,
403 with a wrong one; tokens are compared as SHA-256 digests in constant time, all of them every
time, and never logged. Bodies over the limit get 413 before the app parses anything, whether
they announce their length or stream it, and a body that does not arrive whole within
``body_timeout_s`` gets 408 (so slow senders cannot hold memory). The ``Host`` header must name
the server (loopback names, plus ``allowed_hosts``), which stops DNS rebinding of a loopback
service without a token (400 otherwise). A path or query holding NUL characters gets 422 before
any database sees it (PostgreSQL cannot store or compare them). Every answer carries a strict
Content-Security-Policy. Requests are counted and timed for Prometheus with labels from a closed
set: the route template (or ``other``), the method (unknown methods are ``other``) and the
status, so no caller can grow ``/metrics``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from urllib.parse import unquote_to_bytes

from fastapi.responses import JSONResponse

from attnkit.monitor.settings import Settings

__all__ = ["Guard"]

PROTECTED = ("/v1/", "/metrics")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
     b"connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]  # fmt: skip


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def host_name(value: str) -> str:
    """The host of a ``Host`` header value, without port or IPv6 brackets, lower case."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value


def _has_nul(scope) -> bool:
    if "\x00" in scope["path"]:
        return True
    return b"\x00" in unquote_to_bytes(scope.get("query_string", b"").replace(b"+", b" "))


class Guard:
    """ASGI middleware: bearer-token check, body size limit (413), security headers, and the
    request count and latency metrics (by route template, so ids do not make new series)."""

    def __init__(self, app, settings: Settings, metrics: dict) -> None:
        self.app, self.limit, self.metrics = app, settings.max_body_bytes, metrics
        self.body_timeout = settings.body_timeout_s
        self.digests = [_digest(token) for token in settings.tokens]
        hosts = {host_name(h) for h in (*LOOPBACK_HOSTS, *settings.allowed_hosts)}
        self.any_host = "*" in hosts
        self.hosts = frozenset(hosts)

    def _trusted_host(self, scope) -> bool:
        client = scope.get("client")
        if self.any_host or client is None or client[0] == "testclient":
            return True  # not from a network socket (in-process ASGI client, Unix socket)
        value = dict(scope["headers"]).get(b"host")
        return value is not None and host_name(value.decode("latin-1")) in self.hosts

    def _authorized(self, scope) -> tuple[int, str] | None:
        if not self.digests or not scope["path"].startswith(PROTECTED):
            return None
        headers = dict(scope["headers"])
        value = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 401, "missing bearer token: send 'Authorization: Bearer <token>'"
        given = _digest(token.strip())
        matched = False
        for digest in self.digests:  # every token compared, in constant time
            matched |= hmac.compare_digest(given, digest)
        return None if matched else (403, "invalid token")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        start, status = time.perf_counter(), [500]

        async def send_secured(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        try:
            await self._guarded(scope, receive, send_secured)
        finally:
            route = getattr(scope.get("route"), "path", "other")
            self.metrics["latency"].labels(route).observe(time.perf_counter() - start)
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics["requests"].labels(method, route, status[0]).inc()

    async def _guarded(self, scope, receive, send_secured) -> None:
        if not self._trusted_host(scope):
            refused = (400, "untrusted Host header: add the name to ATTNKIT_ALLOWED_HOSTS")
        elif _has_nul(scope):
            refused = (422, "paths and queries must not contain NUL characters")
        else:
            refused = self._authorized(scope)
        if refused is None:
            refused, receive = await self._read_body(scope, receive)
        if refused is not None:
            status, detail = refused
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            if status in (408, 413):  # the rest of the body is not read: end the connection
                headers = {"Connection": "close"}
            response = JSONResponse({"detail": detail}, status_code=status, headers=headers)
            await response(scope, receive, send_secured)
            return
        await self.app(scope, receive, send_secured)

    async def _read_body(self, scope, receive):
        """Read the whole body (at most ``limit`` bytes) and replay it to the app."""
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = (413, f"request body larger than {self.limit} bytes")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return too_large, receive
        chunks, size, more = [], 0, True
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        while more:
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.0))
            except TimeoutError:
                return (408, f"request body not received within {self.body_timeout:g} s"), receive
            if message["type"] != "http.request":
                return None, receive  # the client went away; let the app see it
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return too_large, receive
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return None, replay
