"""What every online writer is: the protocol the engine writes through, and the caller-thread base.

A writer is used as a context manager: ``write`` batches inside the block; leaving it without an
error means everything is stored. ``written`` counts rows actually written (dedup may skip some).
``before_write`` (if given) is called before the first byte reaches the store; if it raises,
nothing is written and the error propagates (the engine passes the artifacts' checksum check; a
Ray slice, that the latest file is still the one its driver verified). Not to be confused with the
publish gate (:mod:`feast_bc.publish_gate`), which decides whether a version may be published.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple, Protocol

import numpy as np

#: A check a writer runs (before its first write, or before each batch): raises to stop it.
Check = Callable[[], object]


class Batch(NamedTuple):
    """One batch of a view: entity ids, their vectors, and the version and publish time they carry."""

    ids: np.ndarray
    vectors: np.ndarray
    source_version: int
    event_time: datetime


class FamilyPart(NamedTuple):
    """Rows of one family's latest file for several views at once (the fused engine pass).

    Every row shares one event timestamp (so one source version): a view's time window holds
    either all of them or none, and ``vectors`` maps the index of each view whose window holds them
    (its position in the writer's list of views) to the rows' vectors at that view's version.
    """

    ids: np.ndarray
    source_version: int
    event_time: datetime
    vectors: dict[int, np.ndarray]


class OnlineWriter(Protocol):
    """What the engine writes through (see the module docstring for the contract)."""

    written: int

    def __enter__(self) -> OnlineWriter: ...

    def __exit__(self, exc_type, exc, tb) -> None: ...

    def write(self, ids: np.ndarray, vectors: np.ndarray, source_version: int, event_time: datetime) -> None:
        """Write (or queue) one batch."""


class FamilyWriter(Protocol):
    """What every pass writes through: one writer for one or more views of a family (the one
    protocol the engines know; per-view :class:`OnlineWriter`s are parts of a :class:`~.fanout.FanOutWriter`).

    Same contract as :class:`OnlineWriter`; ``written`` counts rows per view (in the order of the
    views the writer was built for)."""

    written: list[int]

    def __enter__(self) -> FamilyWriter: ...

    def __exit__(self, exc_type, exc, tb) -> None: ...

    def write_part(self, part: FamilyPart) -> None:
        """Write (or queue) one part."""


class InlineWriter:
    """Writes in the caller's thread: ``before_write`` runs before the first batch, nothing to drain."""

    def __init__(self, before_write: Check | None):
        self.before_write = before_write
        self.written = 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        return None

    def write(self, ids: np.ndarray, vectors: np.ndarray, source_version: int, event_time: datetime) -> None:
        if self.before_write is not None:
            self.before_write()
            self.before_write = None
        self.written += self._write(Batch(ids, vectors, int(source_version), event_time))

    def _write(self, batch: Batch) -> int:
        """Store one batch; return the rows written."""
        raise NotImplementedError
