"""Bodies that retries can replay, and the hop-by-hop rules every forwarded message follows."""

from contextlib import aclosing

import pytest

from waypoint.messages import Body, BodyNotReplayable, BodyTooLarge, local_response, without_hop_by_hop


def source(chunks: list[bytes]):  # type: ignore[no-untyped-def]
    pending = list(chunks)

    async def next_chunk() -> bytes:
        return pending.pop(0) if pending else b""

    return next_chunk


async def collect(body: Body) -> bytes:
    async with aclosing(body.chunks()) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def test_buffered_body_replays_for_a_retry() -> None:
    body = Body(source([b"ab", b"cd"]), buffer_limit=10)
    assert await collect(body) == b"abcd"
    assert body.replayable and body.complete
    assert await collect(body) == b"abcd"


async def test_body_past_the_buffer_cannot_be_replayed() -> None:
    body = Body(source([b"abc", b"def"]), buffer_limit=4)
    assert await collect(body) == b"abcdef"
    assert not body.replayable
    with pytest.raises(BodyNotReplayable):
        await collect(body)


async def test_interrupted_first_attempt_resumes_from_the_buffer() -> None:
    body = Body(source([b"a", b"b", b"c"]), buffer_limit=10)
    first = body.chunks()
    assert await first.__anext__() == b"a"
    await first.aclose()
    assert await collect(body) == b"abc"


async def test_read_all_enforces_its_limit() -> None:
    with pytest.raises(BodyTooLarge):
        await Body(source([b"12345"])).read_all(4)


def test_connection_named_headers_are_dropped_too() -> None:
    headers = [
        (b"connection", b"keep-alive, x-secret"),
        (b"x-secret", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"x-keep", b"2"),
    ]
    assert without_hop_by_hop(headers) == [(b"x-keep", b"2")]


async def test_local_response_is_plain_text_with_flags() -> None:
    response = local_response(503, "no healthy upstream", flags="UH")
    assert (response.status, response.response_flags) == (503, "UH")
    assert response.header(b"content-length") == b"19"
    assert await response.body.read_all(100) == b"no healthy upstream"
