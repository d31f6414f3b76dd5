"""The HTTP/1.1 connection layer under the app: uvicorn's h11 protocol with two guards it lacks.

- Header timeout: a connection that has not sent a complete request head within `header_timeout_s`
  (new, or between keep-alive requests once bytes arrive) is closed, so slowly trickling clients
  cannot hold connections open indefinitely. Bodies have their own deadline (app.BodyGuard).
- Malformed requests (`Content-Length: abc`, broken chunking) get the API's JSON error shape
  instead of uvicorn's plain-text 400.
"""
from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
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

    def data_received(self, data: bytes) -> None:
        if self._reading_head():
            self._arm()
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if not self._reading_head():
            self._disarm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": "bad_request", "detail": f"malformed HTTP request: {msg}"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def protocol_class(header_timeout_s: float) -> type[GuardedH11Protocol]:
    """The protocol for uvicorn's `http=` with this server's header timeout."""
    return type("ReconH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": float(header_timeout_s)})
