"""The HTTP server every service runs: uvicorn on httptools, held to the limits a server that strangers
can reach needs and uvicorn does not set by itself (issue 23: one 32 MB header cost 1-2 s of CPU, and
silent or half-sent connections stayed open for good)."""
import json
import logging
from dataclasses import dataclass

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from shared.platform.errors import size_in_words

log = logging.getLogger(__name__)

HEAD_LIMIT_BYTES = 64 * 1024  # request line and headers together; a browser's head is a few KiB
HEAD_END = b"\r\n\r\n"  # llhttp takes no other end of a head (a bare LF is a 400)
# An idle connection is kept 30 s, not uvicorn's 5 s: a client whose own keep-alive is 5 s (httpx's
# default) otherwise reuses a connection at the moment the server closes it, and its request fails
# with "Server disconnected without sending a response" (seen in a CI run).
KEEP_ALIVE_S = 30


@dataclass(frozen=True)
class HttpLimits:
    head_timeout_s: float
    body_idle_s: float
    head_bytes: int = HEAD_LIMIT_BYTES


WORKER_PATHS = ("/healthz", "/readyz", "/metrics")


def serve_worker(app, settings) -> None:
    """A worker (`worker`): the app's lifespan runs its relay, consumer and jobs; HTTP answers only the
    operator's probes, on the worker's own port."""
    async def probes_only(scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in WORKER_PATHS:
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body",
                        "body": b'{"detail": "a worker answers /healthz, /readyz and /metrics only; the API is '
                                b'served by `serve --api-only`"}'})
            return
        await app(scope, receive, send)

    serve(probes_only, settings, port=settings.worker_port or settings.port + 100)


def serve(app, settings, port: int | None = None) -> None:
    """Serves `app` on the service's host and port until stopped.

    At `settings.http_max_connections` uvicorn (its `limit_concurrency`) still accepts a connection,
    but answers each request head that arrives while that many connections are open (the asking and the
    idle keep-alive ones counted), or that many requests are running, with 503 "Service Unavailable" and
    closes the connection. A connection that sends nothing gets no answer until the head timeout closes
    it, so the file descriptors a stranger holds are bounded by what he opens in that time."""
    limits = HttpLimits(settings.http_head_timeout_s, settings.http_body_idle_s)
    uvicorn.run(app, host=settings.host, port=port or settings.port, log_level="warning", access_log=False,
                http=limited_protocol(limits), ws="none", timeout_keep_alive=KEEP_ALIVE_S,
                # uvicorn counts the asking connection too: one more, so that this many are served.
                limit_concurrency=settings.http_max_connections + 1)


def limited_protocol(limits: HttpLimits) -> type["LimitedHttpProtocol"]:
    """The protocol class uvicorn instantiates per connection (it passes no arguments of ours)."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})


class HeadMeter:
    """Counts a request head's bytes as they arrive, before the parser sees them: httptools joins a
    header's fragments one read at a time, so a 32 MB header costs it quadratic time (18 s of CPU at
    128 MB) however early it would be refused afterwards. A read holding the end of the head counts only
    up to that end, so a small head followed by a large body in the same read is not taken for a large
    head; the blank line is found even when it is split between two reads."""

    def __init__(self, limit: int):
        self.limit = limit
        self.reset()

    def reset(self) -> None:
        self.counted = 0
        self._tail = b""  # the last bytes of the previous read, in case the blank line spans both

    def within_limit(self, data: bytes) -> bool:
        window = self._tail + data
        end = window.find(HEAD_END, 0, len(self._tail) + self.limit - self.counted)  # past it is over anyway
        self.counted += len(data) if end < 0 else end + len(HEAD_END) - len(self._tail)
        self._tail = window[-(len(HEAD_END) - 1):]
        return self.counted <= self.limit


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with three limits (idle keep-alive connections are uvicorn's own
    `timeout_keep_alive`, armed after each response):

    - a request head over `limits.head_bytes` is answered 431 and the connection closed, before more of
      it reaches the parser;
    - a head not complete within `limits.head_timeout_s` of the connection opening, or of its first byte
      on a kept-alive connection, is answered 408 and the connection closed. A connection that never sent
      a byte is closed without an answer: a client that opened it ahead of need (browsers do) would take
      an unasked 408 for the answer to the request it writes next;
    - a chunked body whose framing (chunk sizes and extensions, trailers) exceeds its data by more than
      `limits.head_bytes` is answered 431 and closed: trailers cost httptools what headers do;
    - a request body with no byte for `limits.body_idle_s` is closed (not while this server has paused
      reading it: then the wait is the application's, not the client's).

    A head that follows the previous request's body in the same read (pipelining, which no browser does)
    is counted from its next read on: one read is at most 256 KiB (uvloop's and asyncio's buffers), parsed
    in linear time."""

    limits: HttpLimits

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.head = HeadMeter(self.limits.head_bytes)
        self.reading_head = True  # the next byte received belongs to a request head
        self.head_timer = None
        self.body_timer = None
        self.last_body_read = 0.0
        # A chunked body's bytes that are not its data (sizes, extensions, trailers) count like a head's:
        # httptools joins a trailer's fragments as it does a header's. At most the limit more than the data.
        self.body_bytes = self.framing_bytes = 0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.head_timer = self.loop.call_later(self.limits.head_timeout_s, self.head_timed_out)

    def connection_lost(self, exc) -> None:
        self.stop_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused: nothing more reaches the parser
        if self.reading_head:
            if not self.head.within_limit(data):
                self.refuse(431, f"the request head (request line and headers) is over this server's limit of "
                                 f"{size_in_words(self.limits.head_bytes)}")
                return
            if self.head_timer is None:
                self.head_timer = self.loop.call_later(self.limits.head_timeout_s, self.head_timed_out)
            super().data_received(data)
            return
        body_before = self.body_bytes
        super().data_received(data)
        self.framing_bytes += len(data) - (self.body_bytes - body_before)
        if self.framing_bytes > self.limits.head_bytes + self.body_bytes:
            self.refuse(431, f"the request body's chunk framing (chunk extensions, trailers) is over this server's "
                             f"limit of {size_in_words(self.limits.head_bytes)} more than its data")

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        self.last_body_read = self.loop.time()
        super().on_body(body)

    def on_headers_complete(self) -> None:
        self.reading_head = False
        self.head.reset()
        self.body_bytes = self.framing_bytes = 0
        self.stop_timers()
        self.last_body_read = self.loop.time()
        self.body_timer = self.loop.call_later(self.limits.body_idle_s, self.body_idle)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.reading_head = True  # whatever follows is the next request's head
        self.stop_timers()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self.stop_timers()  # the connection is the WebSocket protocol's from here on
        super().handle_websocket_upgrade()

    def head_timed_out(self) -> None:
        self.head_timer = None
        if self.head.counted:
            self.refuse(408, f"the request head was not complete within {self.limits.head_timeout_s:g} s")
        else:
            self.transport.close()

    def body_idle(self) -> None:
        idle = self.loop.time() - self.last_body_read
        if self.flow.read_paused or self.cycle.waiting_for_100_continue:  # the wait is the application's
            self.last_body_read, idle = self.loop.time(), 0.0
        if idle < self.limits.body_idle_s:
            self.body_timer = self.loop.call_later(self.limits.body_idle_s - idle, self.body_idle)
            return
        self.body_timer = None
        log.info("closed the connection of %s: its request body stalled for %g s", self.client, idle)
        self.transport.close()

    def refuse(self, status: int, detail: str) -> None:
        """Answers `status` with connection: close, then closes. While an earlier request's answer is
        still due, an answer now would be read as that one's: the connection is only closed."""
        log.info("refused a request of %s with %d: %s", self.client, status, detail)
        if self.cycle is None or self.cycle.response_complete:
            body = json.dumps({"detail": detail}).encode()
            headers = b"".join(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers)
            self.transport.write(STATUS_LINE[status] + headers + b"content-type: application/json\r\n"
                                 + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
        self.transport.close()

    def stop_timers(self) -> None:
        for timer in (self.head_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = None
