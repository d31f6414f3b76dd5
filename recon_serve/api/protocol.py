"""The HTTP/1.1 connection layer under the app: uvicorn's httptools protocol (the llhttp C parser;
h11, its pure-Python one, is slower per request) with two guards it lacks.

- Header timeout: a connection that has not sent a complete request head within `header_timeout_s`
  (new, or between keep-alive requests once bytes arrive) is closed, so slowly trickling clients
  cannot hold connections open indefinitely. Bodies have their own deadline (app.BodyGuard).
- Malformed requests (`Content-Length: abc`, broken chunking) get the API's JSON error shape
  instead of uvicorn's plain-text 400.

It also hands the app the server's set of request tasks (scope["extensions"][REQUESTS]): every request
whose head has arrived, started or not, so the app can tell a lone request from one with company
before the others' tasks have run (the batcher runs a lone one on the event loop).
"""
from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REQUESTS = "recon.requests"


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = None
        self._arm()

    def _reading_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._reading_head() and not self.transport.is_closing():
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {REQUESTS: self.tasks}

    def data_received(self, data: bytes) -> None:
        if self._reading_head():
            self._arm()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._disarm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": "bad_request", "detail": f"malformed HTTP request: {msg}"}).encode()
        head = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n")
        self.transport.write(head + body)
        self.transport.close()


def protocol_class(header_timeout_s: float) -> type[GuardedHttpProtocol]:
    """The protocol for uvicorn's `http=` with this server's header timeout."""
    return type("ReconHttpProtocol", (GuardedHttpProtocol,), {"header_timeout_s": float(header_timeout_s)})
