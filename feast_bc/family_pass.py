"""One pass over a family's latest embeddings that serves several views at once.

Why: every stored version of a family is computed from the same latest parquet file, so
materializing k views one by one reads and decodes that file k times. This pass reads it once,
batch by batch (``batch_rows`` bounds memory), and computes each requested version from the same
decoded rows (``Catalog.transform_vectors``: one matmul per view and batch). The per-view engine
path is the same pass with a single view.

Each view keeps its own time window (Feast's file source: ``start <= event_timestamp <= end``,
inclusive). All rows of one event timestamp come from one published version
(:mod:`feast_bc.provenance`), so a window holds such a group of rows entirely or not at all: the
pass decides per group which views get it, and asks which version the group is only if some view
does -- exactly what filtering by window first, then grouping, would do.

Batches never span two row groups. A float32 matmul's result for a row can depend on how many rows
its batch has (BLAS picks other kernels for short tails), so this is what makes a pass over a
*slice* of the file (``row_groups``: the work of one task of :mod:`feast_bc.ray_engine`) decode and
transform every row in exactly the batch the whole-file pass uses: the same floats, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from feast_bc.embeddings import list_array_to_matrix
from feast_bc.errors import RegistryLagError
from feast_bc.manifest import FamilyManifest
from feast_bc.naming import EMBEDDING_FEATURE, TIMESTAMP_COLUMN
from feast_bc.online_writers.base import FamilyPart
from feast_bc.provenance import timestamp_groups, version_published_at


class ViewWindow(NamedTuple):
    """One view of the pass: the version it serves and its materialization window (None = open)."""

    version: int
    start: datetime | None
    end: datetime | None

    def holds(self, event_time: datetime) -> bool:
        return (self.start is None or self.start <= event_time) and (self.end is None or event_time <= self.end)


def family_parts(
    parquet: pq.ParquetFile,
    catalog,
    manifest: FamilyManifest,
    windows: list[ViewWindow],
    batch_rows: int,
    row_groups: list[int] | None = None,
) -> Iterator[FamilyPart]:
    """Stream the latest file (only ``row_groups``, if given); per batch and event timestamp, the rows
    with their vectors at the version of every view whose window holds them (keys of
    ``FamilyPart.vectors`` index ``windows``).

    Rows of a version older than a view's version mean the registry's views are newer than the file
    they read: :class:`~feast_bc.errors.RegistryLagError`, as in the per-view path.
    """
    family, join_key = manifest.family, manifest.entity.join_key
    columns = [join_key, TIMESTAMP_COLUMN, EMBEDDING_FEATURE]
    groups = range(parquet.num_row_groups) if row_groups is None else row_groups
    batches = (
        batch
        for group in groups
        for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns)
    )
    for batch in batches:
        if batch.num_rows == 0:
            continue
        micros = batch.column(TIMESTAMP_COLUMN).cast(pa.int64()).to_numpy()
        ids = None
        for stamp, event_time, rows in timestamp_groups(micros):
            wanted = [i for i, window in enumerate(windows) if window.holds(event_time)]
            if not wanted:
                continue
            source = version_published_at(manifest, stamp)
            for i in wanted:
                if source < windows[i].version:
                    raise RegistryLagError(
                        f"family {family!r}: view for version {windows[i].version} read rows of version {source}; "
                        "run `feast apply`"
                    )
            if ids is None:
                ids = batch.column(join_key).to_numpy(zero_copy_only=False)
            part = batch if rows is None else batch.take(pa.array(rows))
            mat = list_array_to_matrix(part.column(EMBEDDING_FEATURE), manifest.version(source).dim)
            vectors = {i: catalog.transform_vectors(family, mat, source, windows[i].version, manifest) for i in wanted}
            yield FamilyPart(ids if rows is None else ids[rows], source, event_time, vectors)
