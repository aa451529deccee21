"""How a Redis writer's chunks reach one Redis: the transport protocol and :class:`NodeTransport`
(:class:`~.redis_cluster.ClusterTransport` is the Redis Cluster's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from feast.infra.online_stores.redis import RedisType

from feast_bc.online_writers.redis_rows import Rows
from feast_bc.resp import Pipeline


class Transport(Protocol):
    """How a :class:`RedisHashWriter`'s chunks reach the store, on the writer thread: ``consume``
    runs the writer's ``_write_batch`` over the batches and returns once everything is stored;
    ``write_chunk`` sends one chunk (``pending``: what the previous chunk left in flight) and
    returns what this one leaves in flight; ``interrupt`` cuts the connections it waits on."""

    redis_types: tuple[RedisType, ...]

    @staticmethod
    def connect(online_store, cfg): ...

    def __init__(self, writer): ...

    def consume(self, batches: Iterator) -> None: ...

    def write_chunk(self, pending, chunk: Rows): ...

    def interrupt(self) -> None: ...


class NodeTransport:
    """``writer``: the :class:`~.redis.RedisHashWriter` whose chunks go through it. One Redis (``redis_type: redis``): one raw pipelined connection; what is in flight is a count
    of integer replies."""

    redis_types = (RedisType.redis,)

    def __init__(self, writer):
        self.writer = writer
        self.pipe: Pipeline | None = None
        #: Ask one EXISTS per chunk before paying an HMGET per entity (see :meth:`write_chunk`).
        self.probe_keys = True

    @staticmethod
    def connect(online_store, cfg):
        """Feast's own client of the store (its connection settings, TLS and all)."""
        return online_store._get_client(cfg)

    def consume(self, batches: Iterator) -> None:
        with Pipeline(self.writer.client) as pipe:
            self.pipe = pipe
            pending = 0  # integer replies of the chunk still in flight
            for batch in batches:
                pending = self.writer._write_batch(pending, batch)
            pipe.replies.integers(pending)
            pipe.clean = True

    def interrupt(self) -> None:
        if self.pipe is not None:  # cut the connection the writer thread waits on
            self.pipe.conn.disconnect()

    def write_chunk(self, pending: int, chunk: Rows) -> int:
        """Send one chunk on the one connection: per entity one HMGET of every view's timestamp
        field, then one HSET of the fields of every view whose stored timestamp is older. ``pending``
        is the number of integer replies still in flight before, the return value after it.

        Order on the wire per chunk: [HMGET of this chunk] then its HSETs. The HMGET queues behind
        the previous chunk's HSETs, so Redis never waits for us while we build this chunk's HSETs
        (for every row and view; rebuilt for fewer only when some stored values are not older).
        With ``refuse_newer`` a stored value stamped later than the rows raises before any HSET of
        the chunk is sent.

        Key probe: while ``probe_keys`` holds, a chunk first asks one ``EXISTS`` of all its keys
        instead of the HMGETs. No hash exists (a family materialized for the first time, new ids):
        nothing stored can be newer, so the HSETs go without an HMGET -- measured, the HMGETs were
        about a sixth of Redis's CPU for a fresh 5-view family. Some exist: the chunk's HMGETs follow, and
        the writer stops probing (the store holds this project's entities; re-materializing after a
        new version finds every key, and the probe would only add a command).
        """
        w, pipe = self.writer, self.pipe
        dedup = not w.skip_dedup
        probing = dedup and self.probe_keys
        if dedup:
            pipe.send(w._exists_payload(chunk) if probing else w._hmget_payload(chunk))
        payload = w._hset_payload(chunk)
        pipe.replies.integers(pending)
        pending = 0
        if probing and pipe.replies.integer():  # some hashes exist: their timestamps decide
            self.probe_keys = probing = False
            pipe.send(w._hmget_payload(chunk))
        groups = [chunk]
        if dedup and not probing:
            groups = w._to_write(chunk, pipe.replies.field_arrays(len(chunk), len(chunk.members)))
        for rows in groups:
            pipe.send(payload if rows is chunk else w._hset_payload(rows))
            pending += w._replies_per_row * len(rows)
            w._count(rows.members, len(rows))
        return pending
