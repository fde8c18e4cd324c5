"""How `reloop serve` listens: its socket, and uvicorn's HTTP/1.1 protocol with a deadline on
request headers.

uvicorn closes a keep-alive connection that stays idle, and bounds a graceful shutdown, but it
waits for a request's headers as long as the client likes: 200 clients that send half a request
line each and stall (slowloris) hold 200 sockets for good. Here a connection gets
`serving.header_timeout_seconds` from its first byte, and from the first byte of each following
request on it, to finish its headers; past that it is answered 408 and closed. The body has its
own deadline, in the app (`serving.body_timeout_seconds`).
"""

from __future__ import annotations

import asyncio
import socket

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from reloop_cli.errors import BadInput

HEADER_TIMEOUT_ATTRIBUTE = "reloop_header_timeout"  # set on uvicorn's Config by `reloop serve`
DEFAULT_HEADER_TIMEOUT = 10.0


class HeaderDeadlineProtocol(H11Protocol):
    """H11Protocol that closes a connection whose request headers do not arrive in time."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._reading_body_or_answering():
            self._disarm()
        elif self._header_timer is None and not self.transport.is_closing():
            self._arm()  # the first bytes of a further request on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _reading_body_or_answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        seconds = getattr(self.config, HEADER_TIMEOUT_ATTRIBUTE, DEFAULT_HEADER_TIMEOUT)
        self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._reading_body_or_answering() or self.transport.is_closing():
            return
        if self.conn.our_state is h11.IDLE and self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            body = b'{"error": "headers: not received within serving.header_timeout_seconds"}'
            response = (
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
            )
            self.transport.write(response + body)
        self.transport.close()


def open_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts (so a port in use is a one-line
    error and no boot file or log is written for a server that never served)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on connections whose socket says
    # TCP, and without it every answer on a kept-alive connection waited ~40 ms for the
    # client's delayed ACK (Nagle): /score p50 48 ms instead of 6 on loopback.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (socket.gaierror, OverflowError, UnicodeError) as error:
        sock.close()
        raise BadInput(f"--host {host}: not an address to listen on ({error})") from None
    except OSError as error:
        sock.close()
        raise BadInput(
            f"--host {host} --port {port}: cannot listen there ({error.strerror})"
        ) from None
    sock.set_inheritable(True)  # uvicorn's worker processes take it over
    return sock
