"""The one materialization pass: a unit's views streamed from the latest file into the online store.

Per-view, fused and Ray materialization are configurations of :func:`run_pass`, not
implementations of their own: one view or several (``unit``), the whole file or a slice of its
row groups (``row_groups``), artifacts hashed beside the first batches or verified beforehand by
the caller (``before_write``). Whatever the configuration, each view's rows get the same batches (they
never span row groups), the same floats and the same writer bytes, so the online store ends up
the same.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from feast_bc.latest_guard import LatestGuard
from feast_bc.materialize.settings import DEFAULT_SETTINGS, PassSettings
from feast_bc.materialize.stream import streamed_parts
from feast_bc.materialize.unit import MaterializationUnit
from feast_bc.online_writers import Check, StoreTarget, views_writer_for

logger = logging.getLogger(__name__)


def run_pass(
    repo_config,
    online_store,
    unit: MaterializationUnit,
    settings: PassSettings = DEFAULT_SETTINGS,
    *,
    row_groups: list[int] | None = None,
    before_write: Check | None = None,
) -> list[int]:
    """Stream ``unit``'s latest file (only ``row_groups``, if given), transform every row to each
    view's version and write it; return the rows written per view.

    Checks, in this order: the registry must keep serving the unit's file while the catalog names
    another latest (:class:`~feast_bc.latest_guard.LatestGuard`: before the pass, before every part,
    and by the SQLite writer inside each batch's lock); nothing reaches the store before ``before_write``
    passes. Without one, the family's checksums are that check: hashing a large latest file
    takes as long as reading it, so it runs beside the first batches and the writer waits for it
    (the hashes are cached per file state). A distributed engine verifies once on its driver and
    passes a cheaper check to each slice (:func:`feast_bc.ray_worker.run_slice`).

    The writer is the store's fastest for these views (:func:`~feast_bc.online_writers.views_writer_for`);
    Feast's timestamp rule holds with ``refuse_newer``: a stored value stamped later than the row stops
    the pass instead of being silently kept."""
    guard = LatestGuard(unit.catalog, unit.family, unit.path, unit.served_file)
    with ThreadPoolExecutor(1, thread_name_prefix="feast-bc-verify") as pool:
        verified = None
        if before_write is None:
            verified = pool.submit(unit.catalog.verify, unit.family, unit.manifest)
            before_write = verified.result
        writer = views_writer_for(
            StoreTarget(repo_config, online_store, unit.manifest.entity.join_key, unit.manifest.entity.dtype),
            unit.view_targets,
            before_write=before_write,
            refuse_newer=True,
            guard=guard.check,
        )
        try:
            with writer, streamed_parts(unit, settings, row_groups) as parts:
                for part in parts:
                    guard.check()
                    writer.write_part(part)
        except Exception as exc:
            failed = verified.exception() if verified is not None else None
            if failed is not None and failed is not exc:  # a tampered file explains any later error
                raise failed from exc
            raise
        if verified is not None:
            verified.result()  # also when the windows held no rows
    logger.debug("%s: wrote %s rows", unit.what, writer.written)
    return list(writer.written)
