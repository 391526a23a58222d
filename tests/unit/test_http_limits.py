"""The HTTP limits without a server: the request head counted before the parser sees it, a body refused
the moment it passes the service's limit, and limit texts that state the limit they enforce."""
import json

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from shared.platform.errors import size_in_words
from shared.platform.http_server import HeadMeter
from shared.platform.web import install_common

LIMIT = 64 * 1024


def test_a_head_over_the_limit_is_refused_before_it_ends():
    meter = HeadMeter(LIMIT)
    assert meter.within_limit(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (LIMIT - 100))
    assert not meter.within_limit(b"a" * 200)


def test_a_small_head_with_a_large_body_in_the_same_read_is_not_taken_for_a_large_head():
    meter = HeadMeter(LIMIT)
    head = b"POST /notes HTTP/1.1\r\nHost: x\r\n\r\n"
    assert meter.within_limit(head + b"b" * (10 * LIMIT))
    assert meter.counted == len(head)


@pytest.mark.parametrize("split", [1, 2, 3])
def test_the_end_of_a_head_is_found_when_it_is_split_between_two_reads(split):
    meter = HeadMeter(LIMIT)
    head = b"GET / HTTP/1.1\r\nX-Pad: " + b"p" * (LIMIT - 1000) + b"\r\n\r\n"
    assert meter.within_limit(head[:-split])
    assert meter.within_limit(head[-split:] + b"b" * (2 * LIMIT))
    assert meter.counted == len(head)


def test_a_head_exactly_at_the_limit_passes():
    meter = HeadMeter(LIMIT)
    head = b"GET / HTTP/1.1\r\nX-Pad: " + b"p" * (LIMIT - 27) + b"\r\n\r\n"
    assert len(head) == LIMIT and meter.within_limit(head)
    meter.reset()
    assert not meter.within_limit(head[:-4] + b"p\r\n\r\n")


@pytest.mark.parametrize("size, words", [
    (10 * 2**20, "10 MiB"), (10 * 2**20 + 256 * 1024, "10.25 MiB"), (2**20, "1 MiB"), (64 * 1024, "64 KiB"),
    (300, "300 bytes"), (2**20 + 1, "1,048,577 bytes"),
])
def test_a_limit_is_stated_exactly(size, words):
    assert size_in_words(size) == words


class Note(BaseModel):
    body: str


def _app(limit: int) -> FastAPI:
    app = FastAPI()
    install_common(app, "test", [], limit)

    @app.post("/notes")
    async def add(note: Note):
        return {"length": len(note.body)}

    return app


async def _call(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, dict, dict, int]:
    """One POST through the ASGI app; returns the status, the answer's headers and body, and how many
    body chunks the app asked for."""
    pulled, answer = 0, {}

    async def receive():
        nonlocal pulled
        pulled += 1
        if pulled > len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}

    async def send(message):
        if message["type"] == "http.response.start":
            answer.update(status=message["status"], headers=dict(message["headers"]))
        else:
            answer["body"] = answer.get("body", b"") + message.get("body", b"")

    scope = {"type": "http", "method": "POST", "path": "/notes", "raw_path": b"/notes", "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json"), *headers], "http_version": "1.1",
             "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
    await app(scope, receive, send)
    return answer["status"], answer["headers"], json.loads(answer["body"]), pulled


async def test_a_chunked_body_is_refused_at_the_limit_and_nothing_more_is_read():
    chunks = [b'{"body": "', *[b"a" * 1024] * 200, b'"}']
    status, headers, body, pulled = await _call(_app(50 * 1024), [(b"transfer-encoding", b"chunked")], chunks)
    assert status == 413 and "this service's limit of 50 KiB" in body["detail"]
    assert pulled == 51  # the chunk that passed the limit was the last one read
    assert headers[b"connection"] == b"close"


async def test_a_content_length_over_the_limit_is_refused_before_any_of_the_body_is_read():
    status, headers, body, pulled = await _call(_app(1024), [(b"content-length", b"5000")], [b"x" * 5000])
    assert status == 413 and pulled == 0 and headers[b"connection"] == b"close"
    assert body["detail"] == ("the request body of 5000 bytes is over this service's limit of 1 KiB;"
                              " nothing was read or stored")


async def test_a_body_within_the_limit_is_read_whole_and_the_connection_kept():
    chunks = [b'{"body": "', b"a" * 1000, b'"}']
    status, headers, body, pulled = await _call(_app(1024), [(b"transfer-encoding", b"chunked")], chunks)
    assert (status, body, pulled) == (200, {"length": 1000}, 3)
    assert b"connection" not in headers
