"""Redis Cluster: the bulk writers' RESP pipelines, one per master, keys routed by hash slot.

Feast's cluster writer (redis-py's ``RedisCluster`` pipeline) issues one Python call per command and
per reply. :class:`RedisClusterBulkWriter` builds the same commands as :class:`~.redis.RedisBulkWriter`
-- the same keys, hash fields and bytes, the same timestamp rule and ``refuse_newer`` -- and
:class:`RedisClusterFamilyWriter` the same as :class:`~.redis_family.RedisFamilyWriter` (one HMGET
and one HSET per entity for several views of a family: all of an entity's views live in its one
hash, so on one master); both send each master the rows whose keys it serves, over one raw
pipelined connection per master: they are those writers with :class:`ClusterTransport` (the
chunk step routed by slot) as their transport instead of :class:`~.redis.NodeTransport`:

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
  map. Redone rows are redirected at most :attr:`ClusterTransport.max_redirects` times, then
  :class:`~feast_bc.errors.OnlineStoreUnavailableError` names the key, its slot and the node.
  Other error replies are raised as on a single node (``OOM``, ``WRONGTYPE``, ...).
* **No key probe.** On one node a chunk first asks one ``EXISTS`` of all its keys and skips the
  HMGETs when none exists (:meth:`~.redis.NodeTransport.write_chunk`). A cluster refuses a
  multi-key ``EXISTS`` across slots (``CROSSSLOT``), and a chunk of 4,096 keys spans thousands of
  slots: one ``EXISTS`` per key costs a command per row, what the HMGET it would spare costs. So the
  cluster transport always reads the timestamps.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import numpy as np
from feast.infra.online_stores.redis import RedisType
from redis.crc import REDIS_CLUSTER_HASH_SLOTS
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from feast_bc.errors import OnlineStoreUnavailableError
from feast_bc.online_writers.redis import RedisBulkWriter, RedisHashWriter, Rows
from feast_bc.online_writers.redis_cluster_routing import (
    ASKING,
    ClusterReplies,
    Redirect,
    Redo,
    key_slots,
    redirect_codes,
)
from feast_bc.online_writers.redis_family import RedisFamilyWriter
from feast_bc.resp import Pipeline, field_runs


class ClusterTransport:
    """How a :class:`~.redis.RedisHashWriter`'s chunks reach a Redis Cluster (see the module
    docstring): :meth:`write_chunk` routes each chunk's HMGETs and HSETs to the masters serving the
    keys; the HSET replies still in flight are ``(master, rows)`` pairs instead of one count.

    The slot map is the one Feast's ``RedisCluster`` client holds when the writer is built; keys of
    a slot that moved since then are redirected and redone. One raw connection per master, all on
    the writer thread; leaving the block with an exception discards them.
    """

    redis_types = (RedisType.redis_cluster,)
    #: How many times one row may be redirected (MOVED/ASK) before the writer gives up.
    max_redirects = 5

    @staticmethod
    def connect(online_store, cfg):
        """Feast's ``RedisCluster`` client (it reads the slot map when it connects)."""
        try:
            return online_store._get_client(cfg)
        except RedisClusterException as exc:  # no reachable node, or not a cluster: a connection problem
            raise RedisConnectionError(f"Redis Cluster: {exc}") from exc

    def __init__(self, writer: RedisHashWriter):
        self.writer = writer
        self.client = writer.client
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
        return key_slots(self.writer.keys, ids, self.writer.project)

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
                f"no master of the Redis Cluster serves slot {slot} (writing {self.writer.label}): the cluster is "
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

    def interrupt(self) -> None:
        for pipe in list(self._pipes.values()):
            pipe.conn.disconnect()

    # --------------------------------------------------------------- the rows' two steps
    def _send_hmget(self, name: str, rows: Rows, asking: bool = False) -> None:
        self._node_pipe(name).send(self.writer._hmget_payload(rows, ASKING if asking else b""))

    def _read_hmget(self, name: str, rows: Rows, asking: bool, redo: Redo) -> list[Rows]:
        """The HMGET replies of ``rows``: the rows to HSET (:meth:`~.redis.RedisHashWriter._to_write`);
        redirected ones go to ``redo``."""
        fields = len(rows.members)
        runs = self._node_pipe(name).replies.tolerant(len(rows), fields, asking, name)
        codes, redirects = redirect_codes(runs)
        if redirects:
            for k, redirect in enumerate(redirects):
                redo.append((redirect, rows.take(codes == k), False))
            runs = [(v, r) for v, r in runs if not isinstance(v, Redirect)]
            rows = rows.take(codes < 0)
        return self.writer._to_write(rows, field_runs(runs, fields))

    def _send_hset(self, name: str, rows: Rows, asking: bool = False, expire_only: bool = False) -> None:
        prefix = ASKING if asking else b""
        payload = (
            self.writer._expire_payload(rows.ids, prefix) if expire_only else self.writer._hset_payload(rows, prefix)
        )
        self._node_pipe(name).send(payload)

    def _read_hset(self, name: str, rows: Rows, asking: bool, expire_only: bool, redo: Redo) -> None:
        """The HSET (and EXPIRE) replies of ``rows``: count the rows written, queue redirected ones in ``redo``."""
        n = len(rows)
        per_row = 1 if expire_only else self.writer._replies_per_row
        runs = self._node_pipe(name).replies.tolerant(per_row * n, None, asking, name)
        codes, redirects = redirect_codes(runs)
        codes = codes.reshape(per_row, n)
        if expire_only:
            redo.extend((redirect, rows.take(codes[0] == k), True) for k, redirect in enumerate(redirects))
            return
        hset_ok = codes[0] < 0
        self.writer._count(rows.members, int(hset_ok.sum()))
        for k, redirect in enumerate(redirects):
            whole = codes[0] == k
            if whole.any():
                redo.append((redirect, rows.take(whole), False))
            expire = hset_ok & (codes[-1] == k) if per_row == 2 else None
            if expire is not None and expire.any():
                redo.append((redirect, rows.take(expire), True))

    # ------------------------------------------------------------------------------ I/O
    def consume(self, batches) -> None:
        try:
            with contextlib.ExitStack() as stack:
                self._stack = stack
                in_flight: list[tuple[str, Rows]] = []  # HSETs whose replies are not read yet
                for batch in batches:
                    in_flight = self.writer._write_batch(in_flight, batch)
                redo: Redo = []
                for name, rows in in_flight:
                    self._read_hset(name, rows, False, False, redo)
                self._redo(redo)
                for pipe in self._pipes.values():
                    pipe.clean = True
        finally:
            self._pipes = {}
            self._stack = None

    def write_chunk(self, pending: list[tuple[str, Rows]], chunk: Rows) -> list[tuple[str, Rows]]:
        """Send one chunk (HMGETs queue behind the previous chunk's HSETs, ``pending``: their masters
        and rows); return its HSETs in flight."""
        routed = [(name, chunk.take(index)) for name, index in self._route(chunk.ids)]
        if not self.writer.skip_dedup:
            for name, rows in routed:
                self._send_hmget(name, rows)
        redo: Redo = []
        for name, rows in pending:
            self._read_hset(name, rows, False, False, redo)
        if not self.writer.skip_dedup:
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
            self.writer.check_abort()
            self.redirected += sum(len(rows) for _, rows, _ in redo)
            if any(r.kind == "MOVED" for r, _, _ in redo):
                self._refresh_slot_map()
            again: Redo = []
            for redirect, rows, expire_only in self._merge(redo):
                asking = redirect.kind == "ASK"
                groups = [rows]
                if not expire_only and not self.writer.skip_dedup:
                    self._send_hmget(redirect.node, rows, asking)
                    groups = self._read_hmget(redirect.node, rows, asking, again)
                for group in groups:
                    self._send_hset(redirect.node, group, asking, expire_only)
                    self._read_hset(redirect.node, group, asking, expire_only, again)
            redo = again
        if redo:
            redirect, rows, _ = redo[0]
            key = self.writer.redis_keys(rows.ids[:1])[0]
            raise OnlineStoreUnavailableError(
                f"Redis Cluster kept redirecting {self.writer.label}'s key {key!r} (entity {rows.ids[0]!r}, slot "
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


class RedisClusterBulkWriter(RedisBulkWriter):
    """:class:`~.redis.RedisBulkWriter` for ``redis_type: redis_cluster`` (see the module docstring)."""

    thread_name = "feast-bc-redis-cluster-writer"
    transport_class = ClusterTransport


class RedisClusterFamilyWriter(RedisFamilyWriter):
    """:class:`~.redis_family.RedisFamilyWriter` for ``redis_type: redis_cluster``: one HMGET and
    one HSET per entity for all the views, sent to the master serving the entity's key."""

    thread_name = "feast-bc-redis-cluster-family-writer"
    transport_class = ClusterTransport
