"""uvicorn's HTTP protocol with a deadline for request headers.

uvicorn times out idle keep-alive connections, but a client that connects and then sends its
headers a byte at a time (or nothing at all) holds a connection for ever: a few hundred such
sockets ("slowloris") use up the server's file descriptors while sending almost nothing. Here a
request's headers must arrive within ``header_timeout`` seconds of the connection opening (or of
the previous response on a kept-alive one); otherwise the client gets ``408`` and the
connection is closed. The body has its own deadline in the app (``--body-timeout``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

HEADER_TIMEOUT_S = 10.0


def _timed_out_response() -> bytes:
    body = json.dumps({"error": "request headers not received in time; the connection is "
                                "closed"}).encode()  # fmt: skip
    head = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n")  # fmt: skip
    return head + body


class _HeaderDeadline:
    """Mixed into uvicorn's protocol class (h11 or httptools, whichever uvicorn picks)."""

    header_timeout: float = HEADER_TIMEOUT_S
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():  # kept alive: the next request's headers, in time
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.write(_timed_out_response())
            self.transport.close()


def protocol_class(header_timeout: float = HEADER_TIMEOUT_S) -> type[asyncio.Protocol]:
    """uvicorn's own protocol class (httptools where installed, else h11) with the deadline."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    if AutoHTTPProtocol.__name__ == "HttpToolsProtocol":

        class Protocol(_HeaderDeadline, AutoHTTPProtocol):  # type: ignore[valid-type,misc]
            def on_headers_complete(self) -> None:
                self._disarm()  # a request: from here the app's body deadline applies
                super().on_headers_complete()

    else:
        import h11

        class Protocol(_HeaderDeadline, AutoHTTPProtocol):  # type: ignore[valid-type,misc,no-redef]
            def handle_events(self) -> None:
                super().handle_events()
                if self.conn.their_state is not h11.IDLE:  # a request's headers have arrived
                    self._disarm()

    Protocol.header_timeout = header_timeout
    return Protocol
