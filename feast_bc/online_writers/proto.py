"""Any other online store (Redis sentinel, DynamoDB, ...): Feast protobuf rows through its own writer.

Still streamed in bounded batches, but every row becomes Feast protobuf objects handed to the
store's ``online_write_batch`` -- exactly what Feast's local engine would write.
"""

from __future__ import annotations

from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import FloatList, Value

from feast_bc.naming import EMBEDDING_FEATURE, SOURCE_VERSION_FEATURE
from feast_bc.online_writers.base import Batch, Check, InlineWriter
from feast_bc.online_writers.target import StoreTarget, ViewTarget


class ProtoWriter(InlineWriter):
    """Any online store: Feast protobuf rows through the store's own ``online_write_batch``."""

    def __init__(self, store: StoreTarget, view: ViewTarget, *, before_write: Check | None = None):
        super().__init__(before_write)
        self.repo_config = store.repo_config
        self.online_store = store.online_store
        self.feature_view = view.feature_view
        self.join_key = store.join_key
        self.id_dtype = store.id_dtype
        self.with_source = view.with_source

    def _write(self, batch: Batch) -> int:
        src = Value(int64_val=batch.source_version)
        rows = []
        for entity_id, vec in zip(batch.ids.tolist(), batch.vectors, strict=True):
            val = Value(int64_val=entity_id) if self.id_dtype == "int64" else Value(string_val=entity_id)
            values = {EMBEDDING_FEATURE: Value(float_list_val=FloatList(val=vec))}
            if self.with_source:
                values[SOURCE_VERSION_FEATURE] = src
            rows.append((EntityKey(join_keys=[self.join_key], entity_values=[val]), values, batch.event_time, None))
        self.online_store.online_write_batch(self.repo_config, self.feature_view, rows, progress=None)
        return len(rows)
