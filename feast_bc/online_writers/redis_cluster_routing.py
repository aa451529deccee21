"""What the Redis Cluster transport needs to route and read: the slot of every key (CRC16 in
numpy), ``-MOVED``/``-ASK`` replies and the raw reply reader that tolerates them
(:mod:`.redis_cluster`)."""

from __future__ import annotations

from binascii import crc_hqx
from typing import NamedTuple

import numpy as np
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from feast_bc.online_writers.encoding import EntityKeys
from feast_bc.online_writers.redis_rows import Rows
from feast_bc.resp import RawReplies

ASKING = b"*1\r\n$6\r\nASKING\r\n"

#: CRC16-XMODEM (Redis Cluster's key hash) of each single byte: the table of the byte-wise update.
_CRC_TABLE = np.array([crc_hqx(bytes([i]), 0) for i in range(256)], dtype=np.uint32)


def _crc_step(crc: np.ndarray, byte) -> np.ndarray:
    return ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]


def key_slots(keys: EntityKeys, ids: np.ndarray, suffix: bytes) -> np.ndarray:
    """The cluster slot of every Redis key ``entity key(id) + suffix``, exactly as Redis computes it."""
    n = len(ids)
    prefix = keys.int_prefix
    if prefix is None or b"{" in prefix or b"{" in suffix:
        return np.fromiter((key_slot(k) for k in keys.many(ids, suffix=suffix)), dtype=np.int64, count=n)
    raw = np.ascontiguousarray(ids, dtype="<i8").view(np.uint8).reshape(n, 8)
    crc = np.full(n, crc_hqx(prefix, 0), dtype=np.uint32)
    for col in range(8):
        crc = _crc_step(crc, raw[:, col].astype(np.uint32))
    for byte in suffix:
        crc = _crc_step(crc, byte)
    slots = (crc % REDIS_CLUSTER_HASH_SLOTS).astype(np.int64)
    tagged = np.flatnonzero((raw == ord("{")).any(axis=1))  # a '{' in the id bytes may open a hash tag
    if len(tagged):
        slots[tagged] = [key_slot(k) for k in keys.many(ids[tagged], suffix=suffix)]
    return slots


class Redirect(NamedTuple):
    """A ``-MOVED`` or ``-ASK`` reply: the slot and the master (``host:port``) to ask instead."""

    kind: str
    slot: int
    node: str

    @classmethod
    def parse(cls, reply: bytes, origin: str) -> Redirect:
        kind, slot, node = reply[1:].strip().decode().split()
        if node.startswith(":"):  # Redis leaves the host out when it is the one we asked
            node = origin.rsplit(":", 1)[0] + node
        return cls(kind, int(slot), node)


class ClusterReplies(RawReplies):
    """:class:`~feast_bc.resp.RawReplies` that also accept ``-MOVED``/``-ASK`` in place of a reply."""

    def tolerant(self, count: int, fields: int | None, asking: bool, origin: str) -> list[tuple[object, int]]:
        """Consume ``count`` replies (integers when ``fields`` is None, else HMGET replies of
        ``fields`` fields; each after ASKING's ``+OK`` when ``asking``) as (reply, repeat) runs in
        order: the raw reply bytes, or a :class:`Redirect` for MOVED/ASK. Other errors raise."""

        def one():
            if asking:
                line = self._line()
                if line != b"+OK":
                    self._raise(line, "+OK to ASKING")
            line = self._line()
            if line.startswith((b"-MOVED ", b"-ASK ")):
                return
            if fields is None:
                self._integer(line)
            else:
                self._array(line, fields)

        out: list[tuple[object, int]] = []
        for reply, repeat in self._runs(count, one):
            if asking:
                reply = reply[5:]  # b"+OK\r\n"
            out.append((Redirect.parse(reply, origin) if reply[:1] == b"-" else reply, repeat))
        return out


def redirect_codes(runs: list[tuple[object, int]]) -> tuple[np.ndarray, list[Redirect]]:
    """Per reply: -1, or the index of its redirect in the returned list."""
    redirects: list[Redirect] = []
    codes = []
    for value, _ in runs:
        if isinstance(value, Redirect):
            redirects.append(value)
            codes.append(len(redirects) - 1)
        else:
            codes.append(-1)
    return np.repeat(np.asarray(codes, dtype=np.int64), [r for _, r in runs]), redirects


#: Rows to write again where a redirect points: (the redirect, the rows, ``expire_only`` -- their
#: HSET landed, only their EXPIRE was redirected).
Redo = list[tuple[Redirect, Rows, bool]]
