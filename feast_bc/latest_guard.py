"""Does the registry still serve the file a materialization reads? Checked before the pass and
before every batch it stores.

Why: a materialization writes values computed from one latest file. If a newer version is published,
applied and materialized by another run while a slow pass still runs (or a run started from views
read before that `feast apply`), the slow pass would put the older latest's values back over the
newer ones. Redis catches that by the event timestamps (the writers' ``refuse_newer``); Feast's
SQLite upsert overwrites whatever is there, and a timestamp rule there would also refuse a
deliberate restore of an older catalog and registry (docs/RELIABILITY.md section 8). What tells
them apart is what the profile's registry serves *now*: after a restore it still reads the pass's
file; after a newer apply it reads another one. A profile that lags on purpose (applied at version
k while another profile sharing the catalog is at k+1) also still reads its file, and keeps
materializing it.

So every pass checks, before each batch, that the catalog's latest is its file -- one ``stat`` of
the manifest, read again only when that changed (publishes replace it atomically) -- and, while the
catalog names another file, that this profile's registry (read afresh) still serves its file; else
it stops with :class:`~feast_bc.errors.LatestSupersededError`. The SQLite writer runs the check
after taking the database's write lock (``BEGIN IMMEDIATE``): a newer run starts only after its
`feast apply`, which precedes the check that fails, so no batch of the older pass can land after one
of the newer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from feast_bc.errors import LatestSupersededError
from feast_bc.manifest import MANIFEST_FILENAME


class LatestGuard:
    """:meth:`check` raises :class:`LatestSupersededError` once neither the catalog's latest nor the
    profile's registry (``served_file()``: the file its latest view reads now, None if gone) is
    ``path``, the file the pass reads. Built at the start of a pass: it checks once right away."""

    def __init__(
        self,
        catalog,
        family: str,
        path: str | Path,
        served_file: Callable[[], Path | None] | None,
        *,
        what: str = "",
    ):
        self.catalog = catalog
        self.family = family
        self.path = Path(path)
        self.served_file = served_file
        self.what = what or f"family {family!r}"
        self._manifest_path = catalog.family_dir(family) / MANIFEST_FILENAME
        self._resolved = self.path.resolve()
        self._state: tuple[int, int, int] | None = None
        self._checked = False
        self.check()

    def check(self) -> None:
        """Raise if the registry no longer serves the file this pass reads (before each batch)."""
        try:
            st = os.stat(self._manifest_path)
            state = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            state = None  # reading the manifest reports why
        if state is not None and state == self._state:
            return
        manifest = self.catalog.manifest(self.family)
        latest = self.catalog.artifact_path(self.family, manifest.latest.embeddings)
        if latest.resolve() == self._resolved:
            self._state, self._checked = state, True
            return
        # The catalog has another latest: go on only while this profile's registry serves this file
        # (its `feast apply` has not run yet, or the profile lags on purpose). Not cached: an apply
        # can come at any moment.
        served = self.served_file() if self.served_file is not None else None
        if served is not None and served.resolve() == self._resolved:
            self._state, self._checked = None, True
            return
        now = f"reads {served.name}" if served is not None else "no longer has this view"
        raise LatestSupersededError(
            f"{self.what}: this materialization reads {self.path.name}, but the catalog's latest is version "
            f"{manifest.latest_version} ({latest.name}) and this profile's registry {now}: `feast apply` ran "
            + (
                "while it ran. It stopped before its next batch so as not to write the older latest's values over "
                "the newer ones (every batch stored before is a complete value of the file it read)"
                if self._checked
                else "after this materialization's views were read. Nothing was written"
            )
            + ". Run `feast materialize` again: it reads the registry's current views"
        )
