"""Redis Cluster: the bulk writers' RESP pipelines, one per master, keys routed by hash slot.

Feast's cluster writer (redis-py's ``RedisCluster`` pipeline) issues one Python call per command and
per reply. :class:`RedisClusterBulkWriter` builds the same commands as :class:`~.redis.RedisBulkWriter`
-- the same keys, hash fields and bytes, the same timestamp rule and ``refuse_newer`` -- and
:class:`RedisClusterFamilyWriter` the same as :class:`~.redis_family.RedisFamilyWriter` (one HMGET
and one HSET per entity for several views of a family: all of an entity's views live in its one
hash, so on one master); both send each master the rows whose keys it serves, over one raw
pipelined connection per master (:class:`ClusterHashWriter`, the chunk step of
:class:`~.redis.RedisHashWriter` routed by slot):

* **Routing.** Redis gives a key the slot ``CRC16(key) mod 16384``, hashing only the part between
  the first ``{`` and the next ``}`` when that part is not empty (a hash tag). For int64 ids every
  key is one constant prefix + 8 id bytes + the project, so the CRC of a whole chunk is computed
  column by column in numpy; keys whose id bytes hold a ``{`` (possible hash tags) and string ids
  go through redis-py's ``key_slot``. The slot map is redis-py's (``CLUSTER SLOTS``, read when
  Feast's ``RedisCluster`` client connected, refreshed on ``MOVED``).
* **Pipelining.** Per chunk: the HMGETs of the timestamp fields go to every master involved, then
  the previous chunk's HSET replies are read, then these HMGET replies, then the HSETs are sent --
  so every master executes while the next chunk is built, as on a single node.
* **Redirections.** A reply ``-MOVED slot host:port`` (the slot moved for good) makes the writer
  refresh its slot map and redo the row (HMGET, timestamp rule, HSET) on the named master;
  ``-ASK slot host:port`` (the slot is being migrated and the key is not on the old master) makes
  it send ``ASKING`` before each of the row's commands to the named master, without changing the
  map. Redone rows are redirected at most :attr:`ClusterHashWriter.max_redirects` times, then
  :class:`~feast_bc.errors.OnlineStoreUnavailableError` names the key, its slot and the node.
  Other error replies are raised as on a single node (``OOM``, ``WRONGTYPE``, ...).
"""

from __future__ import annotations

import contextlib
from binascii import crc_hqx
from dataclasses import replace
from typing import NamedTuple

import numpy as np
from feast.infra.online_stores.redis import RedisType
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from feast_bc.errors import OnlineStoreUnavailableError
from feast_bc.online_writers.encoding import EntityKeys
from feast_bc.online_writers.redis import RedisBulkWriter, RedisHashWriter, Rows
from feast_bc.online_writers.redis_family import RedisFamilyWriter
from feast_bc.resp import Pipeline, RawReplies, field_runs

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


def _codes(runs: list[tuple[object, int]]) -> tuple[np.ndarray, list[Redirect]]:
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


class ClusterHashWriter(RedisHashWriter):
    """The cluster side of a :class:`~.redis.RedisHashWriter` (see the module docstring): its
    :meth:`_write_chunk` routes each chunk's HMGETs and HSETs to the masters serving the keys; the
    HSET replies still in flight are ``(master, rows)`` pairs instead of one count.

    The slot map is the one Feast's ``RedisCluster`` client holds when the writer is built; keys of
    a slot that moved since then are redirected and redone. One raw connection per master, all on
    the writer thread; leaving the block with an exception discards them.
    """

    redis_types = (RedisType.redis_cluster,)
    #: How many times one row may be redirected (MOVED/ASK) before the writer gives up.
    max_redirects = 5

    def __init__(self, *args, **kwargs):
        try:
            super().__init__(*args, **kwargs)  # Feast's RedisCluster client connects here
        except RedisClusterException as exc:  # no reachable node, or not a cluster: a connection problem
            raise RedisConnectionError(f"Redis Cluster: {exc}") from exc
        self._pipes: dict[str, Pipeline] = {}
        self._stack: contextlib.ExitStack | None = None
        self.redirected = 0  # rows redone after a MOVED/ASK (for tests and logs)
        self._read_slot_map()

    # ------------------------------------------------------------------------ slot map
    def _read_slot_map(self) -> None:
        """Slot -> index into ``self._nodes`` (the masters' ``host:port``), from redis-py's cache."""
        slots = self.client.nodes_manager.slots_cache
        names: dict[str, int] = {}
        owner = np.full(REDIS_CLUSTER_HASH_SLOTS, -1, dtype=np.int64)
        for slot, nodes in slots.items():
            if nodes:
                owner[slot] = names.setdefault(nodes[0].name, len(names))
        self._owner = owner
        self._nodes = list(names)

    def _refresh_slot_map(self) -> None:
        self.client.nodes_manager.initialize(disconnect_startup_nodes_pools=False)
        self._read_slot_map()

    def slots(self, ids: np.ndarray) -> np.ndarray:
        return key_slots(self.keys, ids, self.project)

    def _route(self, ids: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """(master, row indices) for every master serving some of ``ids``."""
        slots = self.slots(ids)
        owner = self._owner[slots]
        if (owner < 0).any():  # the map read at connection time may predate a fix of the cluster
            self._refresh_slot_map()
            owner = self._owner[slots]
        if (owner < 0).any():
            slot = int(slots[owner < 0][0])
            raise OnlineStoreUnavailableError(
                f"no master of the Redis Cluster serves slot {slot} (writing {self.label}): the cluster is "
                "incomplete (`redis-cli --cluster check` tells which slots); rerun `feast materialize` once it is fixed"
            )
        if len(self._nodes) == 1:
            return [(self._nodes[0], np.arange(len(ids)))]
        return [(self._nodes[k], np.flatnonzero(owner == k)) for k in np.unique(owner).tolist()]

    # ----------------------------------------------------------------------- connections
    def _node_pipe(self, name: str) -> Pipeline:
        pipe = self._pipes.get(name)
        if pipe is None:
            manager = self.client.nodes_manager
            node = manager.get_node(node_name=name)
            if node is None:  # e.g. an ASK to a master not yet in the map
                from redis.cluster import ClusterNode

                host, port = name.rsplit(":", 1)
                node = ClusterNode(host, int(port))
                manager.create_redis_connections([node])
            client = self.client.get_redis_connection(node)
            pipe = self._stack.enter_context(Pipeline(client))
            pipe.replies = ClusterReplies(pipe.replies.sock)
            self._pipes[name] = pipe
        return pipe

    def _interrupt(self) -> None:
        for pipe in list(self._pipes.values()):
            pipe.conn.disconnect()

    # --------------------------------------------------------------- the rows' two steps
    def _send_hmget(self, name: str, rows: Rows, asking: bool = False) -> None:
        self._node_pipe(name).send(self._hmget_payload(rows, ASKING if asking else b""))

    def _read_hmget(self, name: str, rows: Rows, asking: bool, redo: Redo) -> list[Rows]:
        """The HMGET replies of ``rows``: the rows to HSET (:meth:`~.redis.RedisHashWriter._to_write`);
        redirected ones go to ``redo``."""
        fields = len(rows.members)
        runs = self._node_pipe(name).replies.tolerant(len(rows), fields, asking, name)
        codes, redirects = _codes(runs)
        if redirects:
            for k, redirect in enumerate(redirects):
                redo.append((redirect, rows.take(codes == k), False))
            runs = [(v, r) for v, r in runs if not isinstance(v, Redirect)]
            rows = rows.take(codes < 0)
        return self._to_write(rows, field_runs(runs, fields))

    def _send_hset(self, name: str, rows: Rows, asking: bool = False, expire_only: bool = False) -> None:
        prefix = ASKING if asking else b""
        payload = self._expire_payload(rows.ids, prefix) if expire_only else self._hset_payload(rows, prefix)
        self._node_pipe(name).send(payload)

    def _read_hset(self, name: str, rows: Rows, asking: bool, expire_only: bool, redo: Redo) -> None:
        """The HSET (and EXPIRE) replies of ``rows``: count the rows written, queue redirected ones in ``redo``."""
        n = len(rows)
        per_row = 1 if expire_only else self._replies_per_row
        runs = self._node_pipe(name).replies.tolerant(per_row * n, None, asking, name)
        codes, redirects = _codes(runs)
        codes = codes.reshape(per_row, n)
        if expire_only:
            redo.extend((redirect, rows.take(codes[0] == k), True) for k, redirect in enumerate(redirects))
            return
        hset_ok = codes[0] < 0
        self._count(rows.members, int(hset_ok.sum()))
        for k, redirect in enumerate(redirects):
            whole = codes[0] == k
            if whole.any():
                redo.append((redirect, rows.take(whole), False))
            expire = hset_ok & (codes[-1] == k) if per_row == 2 else None
            if expire is not None and expire.any():
                redo.append((redirect, rows.take(expire), True))

    # ------------------------------------------------------------------------------ I/O
    def _consume(self, batches) -> None:
        try:
            with contextlib.ExitStack() as stack:
                self._stack = stack
                in_flight: list[tuple[str, Rows]] = []  # HSETs whose replies are not read yet
                for batch in batches:
                    in_flight = self._write_batch(None, in_flight, batch)
                redo: Redo = []
                for name, rows in in_flight:
                    self._read_hset(name, rows, False, False, redo)
                self._redo(redo)
                for pipe in self._pipes.values():
                    pipe.clean = True
        finally:
            self._pipes = {}
            self._stack = None

    def _write_chunk(self, pipe, pending: list[tuple[str, Rows]], chunk: Rows) -> list[tuple[str, Rows]]:
        """Send one chunk (HMGETs queue behind the previous chunk's HSETs, ``pending``: their masters
        and rows); return its HSETs in flight. ``pipe`` is unused: each master has its own."""
        routed = [(name, chunk.take(index)) for name, index in self._route(chunk.ids)]
        if not self.skip_dedup:
            for name, rows in routed:
                self._send_hmget(name, rows)
        redo: Redo = []
        for name, rows in pending:
            self._read_hset(name, rows, False, False, redo)
        if not self.skip_dedup:
            routed = [(name, group) for name, rows in routed for group in self._read_hmget(name, rows, False, redo)]
        self._redo(redo)  # every connection is idle here: nothing sent is unread
        for name, rows in routed:
            self._send_hset(name, rows)
        return routed

    def _redo(self, redo: Redo) -> None:
        """Write redirected rows again, one round trip at a time, where the cluster sent them."""
        for _ in range(self.max_redirects):
            if not redo:
                return
            self.check_abort()
            self.redirected += sum(len(rows) for _, rows, _ in redo)
            if any(r.kind == "MOVED" for r, _, _ in redo):
                self._refresh_slot_map()
            again: Redo = []
            for redirect, rows, expire_only in self._merge(redo):
                asking = redirect.kind == "ASK"
                groups = [rows]
                if not expire_only and not self.skip_dedup:
                    self._send_hmget(redirect.node, rows, asking)
                    groups = self._read_hmget(redirect.node, rows, asking, again)
                for group in groups:
                    self._send_hset(redirect.node, group, asking, expire_only)
                    self._read_hset(redirect.node, group, asking, expire_only, again)
            redo = again
        if redo:
            redirect, rows, _ = redo[0]
            key = self.redis_keys(rows.ids[:1])[0]
            raise OnlineStoreUnavailableError(
                f"Redis Cluster kept redirecting {self.label}'s key {key!r} (entity {rows.ids[0]!r}, slot "
                f"{redirect.slot}): still {redirect.kind} to {redirect.node} after {self.max_redirects} attempts "
                f"({sum(len(r) for _, r, _ in redo)} rows not written). A slot migration is stuck or the nodes "
                "disagree on the slot map (`redis-cli --cluster check`, then `--cluster fix`). Entities written "
                "so far are complete; rerun `feast materialize` once the cluster is stable"
            )

    @staticmethod
    def _merge(redo: Redo) -> Redo:
        """One group per (target, kind, stamp, views, expire_only): one round trip each."""
        groups: dict[tuple, tuple[Redirect, bool, list[Rows]]] = {}
        for redirect, rows, expire_only in redo:
            key = (redirect.node, redirect.kind, rows.stamp, tuple(rows.members), expire_only)
            groups.setdefault(key, (redirect, expire_only, []))[2].append(rows)
        out = []
        for redirect, expire_only, parts in groups.values():
            rows = parts[0]
            if len(parts) > 1:
                rows = replace(
                    rows,
                    ids=np.concatenate([p.ids for p in parts]),
                    vectors=[np.concatenate([p.vectors[i] for p in parts]) for i in range(len(rows.members))],
                )
            out.append((redirect, rows, expire_only))
        return out


class RedisClusterBulkWriter(ClusterHashWriter, RedisBulkWriter):
    """:class:`~.redis.RedisBulkWriter` for ``redis_type: redis_cluster`` (see the module docstring)."""

    thread_name = "feast-bc-redis-cluster-writer"


class RedisClusterFamilyWriter(ClusterHashWriter, RedisFamilyWriter):
    """:class:`~.redis_family.RedisFamilyWriter` for ``redis_type: redis_cluster``: one HMGET and
    one HSET per entity for all the views, sent to the master serving the entity's key."""

    thread_name = "feast-bc-redis-cluster-family-writer"
