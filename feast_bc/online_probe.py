"""What the online store holds for a sample of a feast_bc view's ids, read with the store's own ``online_read``.

Why: Feast materializes a window ``[start, end]`` and records it per view in the registry, and every
row of a feast_bc latest file carries one event time, its version's publish time. When that time
lies before a window's start although the store does not hold those values -- an interval recorded
by ``materialize-incremental`` before `feast apply` registered the new latest, by another profile
sharing the registry, or for an online store that has since been replaced -- Feast's incremental
materialization would write nothing, forever, and the pins would stay stale or empty. So
:class:`~feast_bc.engine.BCEngine` probes a sample before its pass (and takes the latest's rows in
when the store lacks them) and again after it: a job succeeds only if every sampled id reads the
value the pass was asked to write.

The probe reads what Feast's own read path reads (``OnlineStore.online_read`` on the view's table),
so a writer bug, a window that ended before the publish, or a publisher clock ahead of this one
shows up as a failed job instead of a quiet 0 rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feast_bc.catalog.push_log import PushedRows
from feast_bc.embeddings import list_array_to_matrix
from feast_bc.manifest import FamilyManifest
from feast_bc.naming import EMBEDDING_FEATURE, TAG_FAMILY, TAG_VERSION, TIMESTAMP_COLUMN
from feast_bc.provenance import version_published_at

#: Ids of the latest file probed per view, spread evenly over the file.
PROBE_IDS = 32
TOLERANCE = 1e-5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LatestSample:
    """Ids spread over a latest file, their vectors and the file's publish time: what every view of
    the family is probed with. Read from the first, middle and last row group only (65,536 rows
    each as feast_bc writes them): at 100M x 512 that is ~0.4 GB of a 200 GB file, once per
    materialization and family, not per view."""

    def __init__(self, path, manifest: FamilyManifest, sample: int = PROBE_IDS, pushes: PushedRows | None = None):
        join_key = manifest.entity.join_key
        pf = pq.ParquetFile(path)
        groups = pf.metadata.num_row_groups
        picked = sorted(set(np.linspace(0, groups - 1, num=min(groups, 3)).round().astype(int).tolist()))
        per = max(1, sample // len(picked))
        ids, vectors, micros = [], [], None
        for g in picked:
            table = pf.read_row_group(g, columns=[join_key, TIMESTAMP_COLUMN, EMBEDDING_FEATURE])
            if table.num_rows == 0:
                continue
            rows = np.unique(np.linspace(0, table.num_rows - 1, num=min(per, table.num_rows)).round().astype(np.int64))
            picked_rows = table.take(pa.array(rows))
            ids.append(picked_rows.column(join_key).to_numpy(zero_copy_only=False))
            vectors.append(picked_rows.column(EMBEDDING_FEATURE))
            if micros is None:
                micros = table.column(TIMESTAMP_COLUMN).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())[0].as_py()
        if micros is None:
            raise ValueError(f"{path} holds no rows")
        self.ids = np.concatenate(ids)
        self.source_version = version_published_at(manifest, micros)
        self.published_at = _EPOCH + timedelta(microseconds=micros)
        dim = manifest.version(self.source_version).dim
        self.vectors = np.concatenate([list_array_to_matrix(col, dim) for col in vectors])
        #: per sampled id, the event time its value carries: the publish, or the push that replaced it
        self.stamps = [self.published_at] * len(self.ids)
        if pushes is not None and pushes.version == self.source_version:
            at = {value: row for row, value in enumerate(pushes.ids.tolist())}
            for i, value in enumerate(self.ids.tolist()):
                row = at.get(value)
                if row is not None:
                    self.vectors[i] = pushes.vectors[row]
                    self.stamps[i] = _EPOCH + timedelta(microseconds=int(pushes.micros[row]))


class ViewProbe:
    """The sampled ids of one view and the values (and event time) the store must hold for them."""

    def __init__(self, view, catalog, manifest: FamilyManifest, latest: LatestSample):
        self.view = view
        self.family = view.tags[TAG_FAMILY]
        self.version = int(view.tags[TAG_VERSION])
        self.source_version, self.published_at, self.ids = latest.source_version, latest.published_at, latest.ids
        self.stamps = latest.stamps
        self.expected = catalog.transform_vectors(
            self.family, latest.vectors, self.source_version, self.version, manifest
        )
        self.join_key, self.dtype = manifest.entity.join_key, manifest.entity.dtype

    def _keys(self):
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        def value(i):
            return Value(int64_val=int(i)) if self.dtype == "int64" else Value(string_val=str(i))

        return [EntityKey(join_keys=[self.join_key], entity_values=[value(i)]) for i in self.ids]

    def lacking(self, repo_config, online_store) -> list[str]:
        """Sampled ids whose stored value is absent, of another publish time, or another value."""
        from google.protobuf.message import DecodeError

        try:
            rows = online_store.online_read(repo_config, self.view, self._keys(), [EMBEDDING_FEATURE])
        except DecodeError:  # a stored value no consumer can decode: every sampled id counts
            return [str(i) for i in self.ids]
        bad = []
        for i, (ts, feats) in enumerate(rows):
            proto = (feats or {}).get(EMBEDDING_FEATURE)
            vec = None
            if proto is not None and proto.WhichOneof("val") == "float_list_val":
                vec = np.asarray(proto.float_list_val.val, dtype=np.float32)
            stamp = None if ts is None else (ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC))
            # Compared by the second: SQLite's online_read returns whole seconds (Redis the microsecond).
            expected_at = self.stamps[i]
            if stamp is not None and _second(stamp) > _second(expected_at):
                # A newer latest's value (a later materialization got there first): the writers keep
                # it. One published within the same second looks like a wrong value instead: the
                # job then fails, conservatively; the newer registry's materialization passes.
                continue
            if (
                vec is None
                or vec.shape != self.expected[i].shape
                or stamp is None
                or _second(stamp) != _second(expected_at)
                or float(np.abs(vec - self.expected[i]).max()) > TOLERANCE
            ):
                bad.append(str(self.ids[i]))
        return bad


def _second(ts: datetime) -> datetime:
    return ts.replace(microsecond=0)
