"""The RESP reader of the Redis bulk writer: exact reads off a socket, whatever the network splits."""

from __future__ import annotations

import itertools

import pytest


class _TrickleSocket:
    """Hands out a byte string in pieces of the given sizes (cycled), like a slow network."""

    def __init__(self, data: bytes, sizes):
        self.data, self.sizes, self.pos = data, itertools.cycle(sizes), 0

    def recv(self, n):
        size = min(n, next(self.sizes))
        out = self.data[self.pos : self.pos + size]
        self.pos += len(out)
        return out


@pytest.mark.parametrize("sizes", [[1], [2, 3], [7], [4096]])
def test_raw_reply_reader_handles_any_split_of_the_stream(sizes):
    from feast_bc.resp import RawReplies

    ts_a = b"\x08\x01\r\n\x10\x02"  # stored values may contain CRLF bytes
    ts_b = b"\x08\x05"
    ints = b":3\r\n" * 5 + b":0\r\n" + b":1\r\n" * 3
    arrays = b"*1\r\n$-1\r\n" * 4 + (b"*1\r\n$%d\r\n%s\r\n" % (len(ts_a), ts_a)) * 3 + b"*1\r\n$-1\r\n"
    arrays += b"*1\r\n$%d\r\n%s\r\n" % (len(ts_b), ts_b)
    tail = b":2\r\n"
    reader = RawReplies(_TrickleSocket(ints + arrays + tail, sizes))
    reader.integers(9)
    runs = reader.field_arrays(9, 1)
    assert runs == [[(None, 4), (ts_a, 3), (None, 1), (ts_b, 1)]]
    reader.integers(1)
    assert reader.idle


@pytest.mark.parametrize("sizes", [[1], [3, 5], [4096]])
def test_multi_field_replies_come_back_as_runs_per_field(sizes):
    """HMGET of several views' timestamp fields (the fused family writer): runs per field, merged
    across replies that differ only in another field."""
    from feast_bc.resp import RawReplies

    ts_a, ts_b = b"\x08\x01\r\n\x10\x02", b"\x08\x05"

    def reply(*values):
        body = b"".join(b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v) for v in values)
        return b"*%d\r\n" % len(values) + body

    stream = reply(None, None, None) * 3 + reply(ts_a, None, ts_b) * 2 + reply(ts_a, ts_a, ts_b) + b":1\r\n"
    reader = RawReplies(_TrickleSocket(stream, sizes))
    runs = reader.field_arrays(6, 3)
    assert runs == [
        [(None, 3), (ts_a, 3)],
        [(None, 5), (ts_a, 1)],
        [(None, 3), (ts_b, 3)],
    ]
    reader.integers(1)
    assert reader.idle
    wrong = RawReplies(_TrickleSocket(reply(None, None), [64]))
    with pytest.raises(Exception, match="3-element array"):
        wrong.field_arrays(1, 3)


def test_raw_reply_reader_raises_redis_errors():
    import redis

    from feast_bc.resp import RawReplies

    reader = RawReplies(_TrickleSocket(b":1\r\n-WRONGTYPE Operation against a key\r\n:1\r\n", [5]))
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        reader.integers(3)
    closed = RawReplies(_TrickleSocket(b":1\r\n", [4]))
    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        closed.integers(2)
