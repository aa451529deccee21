"""Feast's byte encodings, derived from Feast's own serializers so the bulk writers match them exactly.

Entity keys (serialization v3), ``feast.types.Value`` payloads and ``google.protobuf.Timestamp``
payloads. The bulk writers build every row from a few constant byte strings computed here once
per view; each is checked against what Feast's serializer produces.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from feast import utils
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import FloatList, Value
from google.protobuf.timestamp_pb2 import Timestamp

from feast_bc.errors import FeastBCError


def value_bytes(**kwargs) -> bytes:
    """A serialized ``feast.types.Value`` (e.g. ``value_bytes(int64_val=3)``)."""
    return Value(**kwargs).SerializeToString()


def vector_prefix(dim: int) -> bytes:
    """Bytes of a serialized ``Value(float_list_val=...)`` before the packed float32 payload."""
    probe = np.arange(1, dim + 1, dtype="<f4")
    data = Value(float_list_val=FloatList(val=probe.tolist())).SerializeToString()
    payload = probe.tobytes()
    if not data.endswith(payload):  # pragma: no cover - protobuf always packs repeated floats
        raise FeastBCError("unexpected protobuf encoding of a float list; cannot use the bulk writer")
    return data[: -len(payload)]


def timestamp_bytes(ts: datetime) -> bytes:
    proto = Timestamp()
    proto.FromDatetime(utils.make_tzaware(ts))
    return proto.SerializeToString()


def timestamp_nanos(data: bytes | None) -> int:
    """Nanoseconds since the epoch of a serialized Timestamp (0 for none)."""
    if not data:
        return 0
    proto = Timestamp()
    proto.ParseFromString(data)
    return proto.seconds * 1_000_000_000 + proto.nanos


class EntityKeys:
    """Feast's serialized entity keys for one join key, without a protobuf call per int64 id.

    In entity key serialization v3 an int64 value is its 8 little-endian bytes at the very end of
    the key, so every key is one constant prefix plus those bytes.
    """

    def __init__(self, join_key: str, id_dtype: str, key_version: int):
        self.join_key, self.id_dtype, self.key_version = join_key, id_dtype, key_version
        self.int_prefix = self.one(0)[:-8] if id_dtype == "int64" else None
        probe = 0x0102030405060708
        if self.int_prefix is not None and self.one(probe) != self.int_prefix + probe.to_bytes(8, "little"):
            self.int_prefix = None  # pragma: no cover - a future key layout: take the slow path

    def one(self, value) -> bytes:
        val = Value(int64_val=int(value)) if self.id_dtype == "int64" else Value(string_val=str(value))
        ek = EntityKey(join_keys=[self.join_key], entity_values=[val])
        return serialize_entity_key(ek, entity_key_serialization_version=self.key_version)

    def many(self, ids: np.ndarray, suffix: bytes = b"") -> list[bytes]:
        if self.int_prefix is not None:
            raw = np.asarray(ids, dtype="<i8").tobytes()
            prefix = self.int_prefix
            return [prefix + raw[i : i + 8] + suffix for i in range(0, len(raw), 8)]
        return [self.one(i) + suffix for i in ids]
