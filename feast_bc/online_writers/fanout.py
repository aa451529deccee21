"""Several views of a family fed from one shared pass, through one per-view writer each.

Stores that keep each view in its own table (SQLite: one table per view) gain nothing from merging
the views' writes; what the fused engine pass saves there is the read and the decode of the latest
file, done once for all views. This writer hands each view's rows of every part to that view's own
writer, so the tables end up exactly as the per-view path leaves them.
"""

from __future__ import annotations

from contextlib import ExitStack

from feast_bc.online_writers.base import FamilyPart, OnlineWriter


class FanOutWriter:
    """A :class:`~feast_bc.online_writers.base.FamilyWriter` over one :class:`OnlineWriter` per view."""

    def __init__(self, writers: list[OnlineWriter]):
        self.writers = writers
        self._stack = ExitStack()

    @property
    def written(self) -> list[int]:
        return [w.written for w in self.writers]

    def __enter__(self) -> FanOutWriter:
        with ExitStack() as stack:
            for writer in self.writers:
                stack.enter_context(writer)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stack.__exit__(exc_type, exc, tb)

    def write_part(self, part: FamilyPart) -> None:
        for index, vectors in sorted(part.vectors.items()):
            self.writers[index].write(part.ids, vectors, part.source_version, part.event_time)
