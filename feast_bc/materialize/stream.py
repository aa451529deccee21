"""The stream of one pass: a family's latest embeddings read once, every requested version computed.

Why: every stored version of a family is computed from the same latest parquet file, so
materializing k views one by one reads and decodes that file k times. This stream reads it once,
batch by batch (``batch_rows`` bounds memory), and computes each requested version from the same
decoded rows (``Catalog.transform_vectors``: one matmul per view and batch). One view alone is the
same stream with a single window (:func:`feast_bc.materialize.run_pass`).

Each view keeps its own time window (Feast's file source: ``start <= event_timestamp <= end``,
inclusive). All rows of one event timestamp come from one published version
(:mod:`feast_bc.provenance`), so a window holds such a group of rows entirely or not at all: the
pass decides per group which views get it, and asks which version the group is only if some view
does -- exactly what filtering by window first, then grouping, would do.

The transformed vectors of each view go into output buffers the pass reuses once the writer has let
go of them (:class:`OutputBuffers`): a fresh (batch_rows, d) float32 array per view and batch costs
the kernel zeroed pages for all of it (measured with perf at d=256: ~15% of the client's CPU).

Batches never span two row groups. A float32 matmul's result for a row can depend on how many rows
its batch has (BLAS picks other kernels for short tails), so this is what makes a pass over a
*slice* of the file (``row_groups``: the work of one task of :mod:`feast_bc.ray_engine`) decode and
transform every row in exactly the batch the whole-file pass uses: the same floats, bit for bit.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feast_bc.catalog.push_log import PushedRows
from feast_bc.embeddings import list_array_to_matrix
from feast_bc.errors import RegistryLagError
from feast_bc.manifest import FamilyManifest
from feast_bc.materialize.settings import PassSettings
from feast_bc.materialize.unit import MaterializationUnit, ViewWindow
from feast_bc.naming import EMBEDDING_FEATURE, TIMESTAMP_COLUMN
from feast_bc.online_writers.base import FamilyPart
from feast_bc.provenance import timestamp_groups, version_published_at


@contextmanager
def blas_threads(limit: int | None):
    """BLAS limited to ``limit`` threads inside the block (None: left as it is).

    Why: a pass is already concurrent -- read and matmul on the calling thread, the writer on its
    own thread, the store in its own process -- and OpenBLAS's helper threads spin-wait between
    calls. Measured on 2 cores (d=256, 5 views into a local Redis): they burnt more CPU than the
    matmul itself, CPU that a Redis on the same machine needed. The engines' ``blas_threads`` (default
    1) sets it; on a machine whose online store is remote and whose cores would otherwise idle, more
    threads shorten the matmul. The limit is process-wide while the block runs.
    """
    if limit is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=int(limit), user_api="blas"):
        yield


class OutputBuffers:
    """(rows, dim) float32 arrays handed out again once nobody but this pool refers to them (not
    thread-safe: take buffers on one thread).

    Why: the writer thread holds a batch's vectors (or slices of them) until its bytes are on the
    wire, so a buffer cannot be reused on a schedule; instead a buffer is free when its reference
    count says that only the pool holds it (every numpy view of it, any slice the writer keeps,
    refers to it as its base). At most ``keep`` buffers per (rows, dim) are kept; beyond that a new
    array is allocated and not kept, so a consumer that holds on to parts costs memory, never
    correctness.
    """

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._pool: dict[tuple[int, int], list[np.ndarray]] = {}

    def take(self, rows: int, dim: int, capacity: int) -> np.ndarray:
        """A C-contiguous (rows, dim) float32 array (its first ``rows`` rows of a ``capacity``-row buffer)."""
        capacity = max(rows, capacity)
        buffers = self._pool.setdefault((capacity, dim), [])
        for buf in buffers:
            # 3 = the list's reference, the loop variable's and getrefcount's argument
            if sys.getrefcount(buf) <= 3:
                return buf[:rows]
        buf = np.empty((capacity, dim), dtype=np.float32)
        if len(buffers) < self.keep:
            buffers.append(buf)
        return buf[:rows]


def family_parts(
    parquet: pq.ParquetFile,
    catalog,
    manifest: FamilyManifest,
    windows: list[ViewWindow],
    batch_rows: int,
    row_groups: list[int] | None,
    transform_threads: int,
    pushes: PushedRows | None = None,
) -> Iterator[FamilyPart]:
    """Stream the latest file (only ``row_groups``, if given); per batch and event timestamp, the rows
    with their vectors at the version of every view whose window holds them (keys of
    ``FamilyPart.vectors`` index ``windows``).

    Rows of a version older than a view's version mean the registry's views are newer than the file
    they read: :class:`~feast_bc.errors.RegistryLagError`, as in the per-view path.

    ``pushes`` (:mod:`feast_bc.catalog.push_log`): the file's rows of pushed entities are skipped,
    and the slice holding row group 0 (the whole-file pass) streams the pushed rows after the file,
    each push with its own event time -- so a window that ends before a push writes neither the
    pushed value nor the older published one over it.

    ``transform_threads`` > 1 transforms the views of a batch concurrently, each matmul on its own
    thread (numpy releases the GIL; the same floats as one after the other). Why not more BLAS
    threads instead: BLAS's helper threads spin while they wait (:func:`blas_threads`); these block.
    Measured at d=512, 5 views, a new version over the previous one into Redis: 145k -> 175k
    version-rows/s with 2.
    """
    family = manifest.family
    buffers = OutputBuffers(keep=4 * len(windows))
    pool = (
        ThreadPoolExecutor(transform_threads, thread_name_prefix="feast-bc-transform")
        if transform_threads > 1
        else None
    )

    def transform_all(mat: np.ndarray, source: int, wanted: list[int]) -> dict[int, np.ndarray]:
        # buffers are taken here, on one thread: OutputBuffers is not thread-safe
        jobs = {}
        for i in wanted:
            target = windows[i].version
            out = None if target == source else buffers.take(len(mat), manifest.version(target).dim, batch_rows)
            jobs[i] = (family, mat, source, target, manifest, out)
        if pool is None or len(jobs) < 2:
            return {i: catalog.transform_vectors(*job) for i, job in jobs.items()}
        futures = {i: pool.submit(catalog.transform_vectors, *job) for i, job in jobs.items()}
        return {i: future.result() for i, future in futures.items()}

    try:
        yield from _parts(parquet, manifest, windows, batch_rows, row_groups, transform_all, pushes)
        if pushes is not None and (row_groups is None or 0 in row_groups):  # one slice writes them
            yield from _pushed_parts(pushes, manifest, windows, transform_all)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


@contextmanager
def streamed_parts(unit: MaterializationUnit, settings: PassSettings, row_groups: list[int] | None = None):
    """:func:`family_parts` of ``unit`` (only ``row_groups``, if given) under the pass's BLAS limit;
    leaving the block closes it (its transform threads stop), also when the consumer fails half-way."""
    # pre_buffer=False: with pyarrow's default, iter_batches buffers every row group's column chunks
    # up front -- the whole table in memory (measured: 1.2 GiB of arrow memory for a 1 GiB file,
    # against 0.26 GiB without)
    parquet = pq.ParquetFile(unit.path, pre_buffer=False)
    windows = list(unit.windows)
    parts = family_parts(
        parquet,
        unit.catalog,
        unit.manifest,
        windows,
        settings.batch_rows,
        row_groups,
        settings.transform_threads,
        unit.pushes,
    )
    with blas_threads(settings.blas_threads), closing(parts):
        yield parts


def _pushed_parts(pushes: PushedRows, manifest, windows, transform_all) -> Iterator[FamilyPart]:
    """The pushed rows, one part per push (event time) that some view's window holds."""
    source = pushes.version
    for _, event_time, rows in timestamp_groups(pushes.micros):
        wanted = [i for i, window in enumerate(windows) if window.holds(event_time)]
        if not wanted:
            continue
        _refuse_lag(manifest.family, windows, wanted, source)
        ids = pushes.ids if rows is None else pushes.ids[rows]
        mat = pushes.vectors if rows is None else pushes.vectors[rows]
        yield FamilyPart(ids, source, event_time, transform_all(np.ascontiguousarray(mat), source, wanted))


def _refuse_lag(family, windows, wanted, source) -> None:
    for i in wanted:
        if source < windows[i].version:
            raise RegistryLagError(
                f"family {family!r}: view for version {windows[i].version} read rows of version {source}; "
                "run `feast apply`"
            )


def _parts(parquet, manifest, windows, batch_rows, row_groups, transform_all, pushes=None) -> Iterator[FamilyPart]:
    family, join_key = manifest.family, manifest.entity.join_key
    columns = [join_key, TIMESTAMP_COLUMN, EMBEDDING_FEATURE]
    groups = range(parquet.num_row_groups) if row_groups is None else row_groups
    batches = (
        batch
        for group in groups
        for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns)
    )
    for batch in batches:
        ids = None
        if pushes is not None and batch.num_rows:
            ids = batch.column(join_key).to_numpy(zero_copy_only=False)
            kept = ~np.isin(ids, pushes.ids)
            if not kept.all():  # a pushed entity: its pushed vector follows the file
                batch, ids = batch.filter(pa.array(kept)), ids[kept]
        if batch.num_rows == 0:
            continue
        micros = batch.column(TIMESTAMP_COLUMN).cast(pa.int64()).to_numpy()
        for stamp, event_time, rows in timestamp_groups(micros):
            wanted = [i for i, window in enumerate(windows) if window.holds(event_time)]
            if not wanted:
                continue
            source = version_published_at(manifest, stamp)
            _refuse_lag(family, windows, wanted, source)
            if ids is None:
                ids = batch.column(join_key).to_numpy(zero_copy_only=False)
            part = batch if rows is None else batch.take(pa.array(rows))
            mat = list_array_to_matrix(part.column(EMBEDDING_FEATURE), manifest.version(source).dim)
            vectors = transform_all(mat, source, wanted)
            yield FamilyPart(ids if rows is None else ids[rows], source, event_time, vectors)
