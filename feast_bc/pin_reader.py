"""A fast read of one pinned version, for consumers that opt in: Feast's values at the raw store's speed.

``store.get_online_features(features=<pin>, entity_rows=...)`` costs 2.2x the raw Redis floor
(one pipelined HMGET + decode) for one entity and 4.1x for 100 (docs/BENCHMARKS.md): Feast builds
protobuf entity keys, parses every value into a protobuf object and converts it back to Python
lists. :class:`PinReader` reads exactly the fields Feast reads for a feast_bc pin -- on Redis the
view's ``embedding`` field and its ``_ts:<view>`` stamp from the entity's hash, on SQLite and
PostgreSQL the ``embedding`` rows of the view's table (one ``SELECT``) -- and decodes the vectors in bulk with numpy (the float32
payload of Feast's ``Value(float_list_val=...)`` is its tail). Redis goes through redis-py (with
hiredis, as ``feast[redis]`` installs it): one pipelined round trip per read.

Same answers as Feast: one entry per id in order, a float32 vector or None where Feast returns
null (no value, or no stamp on Redis). Resolved once when it is built (the FeatureService, its view,
the store's layout); build a new one after `feast apply` registers another latest. Other stores
(and Redis sentinel/glide) fall back to ``get_online_features`` itself, logged once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from feast_bc.errors import InvalidInputError
from feast_bc.naming import EMBEDDING_FEATURE, TAG_FAMILY

logger = logging.getLogger(__name__)


class PinReader:
    """Reads one pinned FeatureService of a feast_bc family (see the module docstring)."""

    def __init__(self, repo: str | Path, service: str, *, fs_yaml_file: str | Path | None = None, store=None):
        from feast import FeatureStore
        from feast.infra.online_stores.redis import RedisOnlineStore, RedisType
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        from feast_bc.online_writers.target import is_postgres

        self.store = store or FeatureStore(
            repo_path=str(repo), fs_yaml_file=Path(fs_yaml_file) if fs_yaml_file else None
        )
        self.service = self.store.get_feature_service(service)
        projections = self.service.feature_view_projections
        if len(projections) != 1 or [f.name for f in projections[0].features] != [EMBEDDING_FEATURE]:
            raise InvalidInputError(
                f"{service} is not a feast_bc pin (one view, the {EMBEDDING_FEATURE!r} feature); read it with "
                "get_online_features"
            )
        self.view = self.store.registry.get_any_feature_view(projections[0].name, self.store.project)
        if not self.view.tags.get(TAG_FAMILY):
            raise InvalidInputError(f"{service} reads {self.view.name}, which is not a feast_bc view")
        entity = self.store.get_entity(self.view.entities[0])
        self.join_key = entity.join_key
        self.int_ids = entity.value_type.name == "INT64"
        config, online = self.store.config, self.store._get_provider().online_store
        cfg = config.online_store
        self._read = None
        if isinstance(online, RedisOnlineStore) and cfg.redis_type in (RedisType.redis, RedisType.redis_cluster):
            if getattr(cfg, "client", "redis") == "redis":
                self._read = self._redis(config, online)
        elif isinstance(online, SqliteOnlineStore):
            self._read = self._sqlite(config, online)
        elif is_postgres(online):
            self._read = self._postgres(config, online)
        if self._read is None:
            logger.info("%s: no fast path for this online store; reading through get_online_features", service)
            self._read = self._feast

    def read(self, ids) -> list[np.ndarray | None]:
        """The pin's vector of every id, in order (None where Feast returns null)."""
        return self._read(self._ids(ids))

    # ------------------------------------------------------------------------------ stores
    def _keys(self, config):
        from feast_bc.online_writers.encoding import EntityKeys

        return EntityKeys(self.join_key, "int64" if self.int_ids else "string", config.entity_key_serialization_version)

    def _redis(self, config, online):
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import _versioned_fv_name

        name = _versioned_fv_name(self.view, config)
        fields = [_mmh3(f"{name}:{EMBEDDING_FEATURE}"), f"_ts:{name}".encode()]
        client = online._get_client(config.online_store)
        keys, project = self._keys(config), config.project.encode()

        def read(ids):
            pipe = client.pipeline(transaction=False)
            for key in keys.many(ids, suffix=project):
                pipe.hmget(key, fields)
            return [None if stamp is None else _vector(value) for value, stamp in pipe.execute()]

        return read

    def _sqlite(self, config, online):
        from feast.infra.online_stores.sqlite import _quote_id, _table_id

        versioning = getattr(config.registry, "enable_online_feature_view_versioning", False)
        table = _quote_id(_table_id(config.project, self.view, versioning))
        conn = online._get_conn(config)
        keys = self._keys(config)

        def read(ids):
            wanted = keys.many(ids)
            found = {}
            for start in range(0, len(wanted), 900):  # SQLite's bound-parameter limit
                part = wanted[start : start + 900]
                rows = conn.execute(
                    f"SELECT entity_key, value FROM {table} WHERE feature_name = ? "
                    f"AND entity_key IN ({','.join('?' * len(part))})",
                    [EMBEDDING_FEATURE, *part],
                ).fetchall()
                found.update(rows)
            return [_vector(found.get(key)) for key in wanted]

        return read

    def _postgres(self, config, online):
        from feast.infra.online_stores.postgres_online_store.postgres import _table_id
        from psycopg import sql

        versioning = getattr(config.registry, "enable_online_feature_view_versioning", False)
        query = sql.SQL("SELECT entity_key, value FROM {} WHERE feature_name = %s AND entity_key = ANY(%s)").format(
            sql.Identifier(_table_id(config.project, self.view, versioning))
        )
        keys = self._keys(config)

        def read(ids):
            wanted = keys.many(ids)
            with online._get_conn(config, autocommit=True) as conn:
                found = {bytes(key): value for key, value in conn.execute(query, (EMBEDDING_FEATURE, wanted))}
            return [_vector(found.get(key)) for key in wanted]

        return read

    def _feast(self, ids):
        rows = [{self.join_key: i} for i in ids.tolist()]
        values = self.store.get_online_features(features=self.service, entity_rows=rows).to_dict()[EMBEDDING_FEATURE]
        return [None if v is None else np.asarray(v, dtype=np.float32) for v in values]

    def _ids(self, ids) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise InvalidInputError(f"ids must be a 1-D sequence; got shape {arr.shape}")
        if self.int_ids:
            if arr.size and arr.dtype.kind not in "iu":
                raise InvalidInputError(f"{self.join_key} is an int64 key: ids must be integers, got {arr.dtype}")
            return arr.astype(np.int64)
        if arr.size and arr.dtype.kind not in "UO":
            raise InvalidInputError(f"{self.join_key} is a string key: ids must be strings, got {arr.dtype}")
        return arr.astype(object)


def _vector(value: bytes | None) -> np.ndarray | None:
    """A serialized ``Value(float_list_val=...)`` as float32 (None for no value): its packed payload
    is the tail, after the field's tag and length varints; anything else is parsed as Feast would."""
    if not value:
        return None
    view = memoryview(value)
    # Value.float_list_val (field 16, length-delimited: tag 0x82 0x01) -> FloatList.val (field 1, packed: 0x0a)
    if view[:2] == b"\x82\x01":
        pos = _skip_varint(view, 2)
        if pos < len(view) and view[pos] == 0x0A:
            start = _skip_varint(view, pos + 1)
            if (len(view) - start) % 4 == 0:
                return np.frombuffer(value, dtype="<f4", offset=start)
    from feast.protos.feast.types.Value_pb2 import Value

    proto = Value()
    proto.ParseFromString(value)
    kind = proto.WhichOneof("val")
    return None if kind is None else np.asarray(getattr(proto, kind).val, dtype=np.float32)


def _skip_varint(view: memoryview, pos: int) -> int:
    while pos < len(view) and view[pos] & 0x80:
        pos += 1
    return pos + 1
