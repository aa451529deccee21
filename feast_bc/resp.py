"""Pipelined RESP traffic on one redis-py connection, with the replies read straight off the socket.

Why not redis-py's own pipeline: it parses every reply through one Python call (~3 µs each), which
at a million rows costs more than Redis spends executing the commands. The bulk writers only ever
wait for two kinds of replies -- integers (HSET, EXPIRE) and arrays of a fixed length (HMGET of
each view's timestamp field) -- and those nearly always repeat byte for byte (``:3``, ``*1 $-1`` for
a missing key, the same stored timestamps), so :class:`RawReplies` compares whole runs of identical replies in C and
parses one at a time only where they differ. Reading is exact: it stops at the last byte of the
last reply asked for, so replies of commands sent later stay in the buffer for the next call.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError


class RawReplies:
    """Buffered reader of RESP replies from a socket-like object with ``recv``."""

    def __init__(self, sock, recv_bytes: int = 1 << 20):
        self.sock = sock
        self.recv_bytes = recv_bytes
        self.buf = b""
        self.pos = 0
        self.mark = 0
        self._fast = True  # try run-comparison until a mismatch in the data buffered so far

    # ------------------------------------------------------------------ buffer
    def _more(self) -> None:
        """Receive more bytes, dropping what lies before ``mark`` (the reply being parsed)."""
        chunk = self.sock.recv(self.recv_bytes)
        if not chunk:
            raise RedisConnectionError("Redis closed the connection while replies were pending")
        self.buf = self.buf[self.mark :] + chunk
        self.pos -= self.mark
        self.mark = 0
        self._fast = True

    def _line(self) -> bytes:
        """The next CRLF-terminated line (without CRLF); consumes it."""
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = self.buf[self.pos : end]
                self.pos = end + 2
                return line
            self._more()

    def _skip(self, n: int) -> None:
        while len(self.buf) - self.pos < n:
            self._more()
        self.pos += n

    @staticmethod
    def _raise(line: bytes, expected: str):
        if line[:1] == b"-":
            raise ResponseError(line[1:].decode(errors="replace"))
        raise ResponseError(f"expected {expected} from Redis, got {line[:80]!r}")

    def _runs(self, count: int, read_one: Callable[[], None]) -> list[tuple[bytes, int]]:
        """Consume ``count`` replies as (raw reply bytes, repeat) runs; ``read_one`` consumes one."""
        runs: list[tuple[bytes, int]] = []
        while count:
            self.mark = self.pos
            read_one()
            reply = self.buf[self.mark : self.pos]
            self.mark = self.pos
            repeat = 1
            count -= 1
            if count and self._fast:
                width = len(reply)
                k = min(count, (len(self.buf) - self.pos) // width)
                if k and self.buf[self.pos : self.pos + width * k] == reply * k:
                    self.pos += width * k
                    self.mark = self.pos
                    repeat += k
                    count -= k
                elif k:
                    self._fast = False  # mixed replies: one at a time until new data arrives
            if runs and runs[-1][0] == reply:
                runs[-1] = (reply, runs[-1][1] + repeat)
            else:
                runs.append((reply, repeat))
        return runs

    @property
    def idle(self) -> bool:
        """True when every byte received so far has been consumed."""
        return self.pos == len(self.buf)

    # ------------------------------------------------------------------ reply kinds
    def integers(self, count: int) -> None:
        """Consume ``count`` integer replies; raise the first error reply among them."""

        self._runs(count, lambda: self._integer(self._line()))

    def integer(self) -> int:
        """Consume one integer reply and return its value; raise if it is an error reply."""
        line = self._line()
        self._integer(line)
        self.mark = self.pos
        return int(line[1:])

    def _integer(self, line: bytes) -> None:
        """Check one integer reply whose line was ``line``."""
        if line[:1] != b":":
            self._raise(line, "an integer reply")

    def _array(self, head: bytes, fields: int) -> None:
        """Consume the rest of one HMGET reply of ``fields`` fields whose first line was ``head``."""
        if head != b"*%d" % fields:
            self._raise(head, f"a {fields}-element array")
        for _ in range(fields):
            line = self._line()
            if line == b"$-1":
                continue
            if line[:1] != b"$":
                self._raise(line, "a bulk string")
            self._skip(int(line[1:]) + 2)

    def field_arrays(self, count: int, fields: int) -> list[list[tuple[bytes | None, int]]]:
        """Consume ``count`` HMGET replies of ``fields`` fields each (the timestamp field of each view
        being written); per field, its (value or None, repeat) runs in row order."""
        return field_runs(self._runs(count, lambda: self._array(self._line(), fields)), fields)


def field_runs(replies: list[tuple[bytes, int]], fields: int) -> list[list[tuple[bytes | None, int]]]:
    """(raw HMGET reply of ``fields`` fields, repeat) runs -> per field, its (value or None, repeat) runs."""
    out: list[list[tuple[bytes | None, int]]] = [[] for _ in range(fields)]
    for reply, repeat in replies:
        for runs, value in zip(out, _array_values(reply, fields), strict=True):
            if runs and runs[-1][0] == value:
                runs[-1] = (value, runs[-1][1] + repeat)
            else:
                runs.append((value, repeat))
    return out


def _array_values(reply: bytes, fields: int) -> list[bytes | None]:
    """The bulk strings (None for nil) of one array reply already checked by ``field_arrays``."""
    values: list[bytes | None] = []
    pos = reply.index(b"\r\n") + 2
    for _ in range(fields):
        end = reply.index(b"\r\n", pos)
        size = int(reply[pos + 1 : end])
        if size < 0:
            values.append(None)
            pos = end + 2
        else:
            values.append(reply[end + 2 : end + 2 + size])
            pos = end + 2 + size + 2
    return values


class Pipeline:
    """One connection taken from the client's pool for raw pipelined traffic.

    The caller sets ``clean`` once it has read every reply it asked for. Any failure, or leaving
    the block without ``clean``, discards the connection: one with unread replies must never go
    back to the pool.
    """

    def __init__(self, client):
        self.pool = client.connection_pool
        self.conn = self.pool.get_connection()
        sock = getattr(self.conn, "_sock", None)
        if sock is None:  # pragma: no cover - get_connection() connects; keep the guarantee explicit
            self.conn.connect()
            sock = self.conn._sock
        self.replies = RawReplies(sock)
        self.clean = False

    def __enter__(self) -> Pipeline:
        return self

    def send(self, payload: bytes) -> None:
        self.conn.send_packed_command([payload], check_health=False)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.clean or not self.replies.idle:
            self.conn.disconnect()
        self.pool.release(self.conn)
