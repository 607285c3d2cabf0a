"""uvicorn's HTTP protocols with the two limits on request heads that uvicorn lacks.

uvicorn 0.54 gives a connection all the time it wants to send a request's head, and httptools
concatenates the pieces of a header however large it grows (h11 stops at 16 KB, with a 400):
300 half-sent heads stayed open for ever, and one 1 MB header was buffered whole. These
subclasses add, for both parsers:

- a deadline: a request's head must be complete ``RELAY_HEADER_TIMEOUT`` seconds after the
  connection opened or after the previous response finished (keep-alive), or the connection
  is closed (slowloris);
- a size cap while the head arrives: beyond ``RELAY_MAX_HEADER_BYTES`` plus room for the
  request line and line ends (``head_limit``), a plain 431 and the connection is closed.

relay.http still counts a complete head's headers and bytes exactly and answers 431 in the
caller's format; this module only bounds what a server holds before the head is complete, so
what it lets through can be measured there. Serve with::

    uvicorn config.asgi:application --http config.server:GuardedHttpToolsProtocol

(``GuardedH11Protocol`` for h11). Settings are read per connection, so a test's override
applies to its next connection.

uvicorn internals this relies on (pinned by tests/test_front_limits.py): ``self.cycle``, the
request being served (``response_complete`` once answered); ``on_response_complete``, called
as each response finishes; ``self.loop`` and ``self.transport``; httptools' parser callbacks
``on_message_begin`` and ``on_headers_complete``; h11's ``self.conn``.
"""

import asyncio
import os

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings

# Beyond the names and values relay.http measures: the request line (a long query string
# included) and ": " plus CRLF around every header.
REQUEST_LINE_ALLOWANCE = 8 * 1024
PER_HEADER_FRAMING = 4

BODY = b"Request headers are too large."
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + BODY
)


def head_limit() -> int:
    """The most bytes of an incomplete request head a connection may hold."""
    return (
        settings.RELAY_MAX_HEADER_BYTES
        + settings.RELAY_MAX_HEADERS * PER_HEADER_FRAMING
        + REQUEST_LINE_ALLOWANCE
    )


class HeadGuard:
    """The deadline and the refusal, shared by both parsers (mixed in before uvicorn's class).

    One timer per connection, started whenever the connection waits for a new head (on
    connection and after each response). When it fires, a connection still serving a request
    is left alone: its head did arrive, and the body has its own deadline (relay.http).
    """

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(settings.RELAY_HEADER_TIMEOUT, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _serving(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _head_too_slow(self) -> None:
        self._head_timer = None
        # A WebSocket upgrade hands the transport to another protocol: not ours to close.
        handed_over = self.transport.get_protocol() is not self
        if self._serving() or handed_over or self.transport.is_closing():
            return
        self.transport.close()

    def _refuse_head(self) -> None:
        # A pipelined head arriving while an earlier answer is being written: never write
        # into that answer, just close.
        if not self._serving():
            self.transport.write(HEAD_TOO_LARGE)
        self.transport.close()


class GuardedHttpToolsProtocol(HeadGuard, HttpToolsProtocol):
    """httptools with a head deadline and a head size cap."""

    _head_open = False  # from a message's first byte to the end of its head
    _head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_open and not self.transport.is_closing():
            # The chunk a head starts in may end an earlier body: counted whole, which errs
            # by less than one read towards refusing.
            self._head_bytes += len(data)
            if self._head_bytes > head_limit():
                self._refuse_head()


class GuardedH11Protocol(HeadGuard, H11Protocol):
    """h11 with a head deadline, and a head size cap answered with 431 (h11's own gives 400)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # h11's own cap stays as a backstop well above ours, so ours answers first.
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=head_limit() + 2**20)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        # IDLE: no request parsed yet, so everything h11 holds is an incomplete head.
        if len(self.conn.trailing_data[0]) > head_limit():
            self._refuse_head()
