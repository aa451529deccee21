"""The threaded pipeline of a writer: the producer queues batches, one writer thread stores them.

Reading parquet and the matmul of the next batch (both release the GIL) overlap with the store
executing this one. At most ``queue_batches`` batches wait, which bounds memory. Leaving the
``with`` block without an error waits for the thread to store everything and raises its error, if
any; leaving it with an exception stops the thread, interrupting it if it is blocked in I/O. The
``before_write`` check runs on the writer thread before the first byte is stored.

A store plugs in :meth:`ThreadedWriter._consume` (store every batch of an iterator) and
:meth:`ThreadedWriter._interrupt` (unblock its I/O); :class:`~feast_bc.online_writers.redis.RedisBulkWriter`
is one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from datetime import datetime

import numpy as np

from feast_bc.online_writers.base import Batch, Check

_DONE = object()
#: How often a waiting side looks again whether the other one failed (seconds).
_POLL_S = 0.2
#: How long leaving with an error waits for the thread, before and after interrupting it (seconds).
_JOIN_S = 10


class Aborted(Exception):
    """The producer left its ``with`` block with an error; the writer thread stops."""


class ThreadedWriter:
    thread_name = "feast-bc-writer"

    def __init__(self, *, queue_batches: int = 1, before_write: Check | None = None):
        self.before_write = before_write
        self.written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_batches)))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._abort = threading.Event()

    # ------------------------------------------------------------------- producer side
    def __enter__(self):
        return self

    def write(self, ids: np.ndarray, vectors: np.ndarray, source_version: int, event_time: datetime) -> None:
        """Queue one batch for the writer thread; raises the thread's error if it has failed."""
        self._submit(Batch(ids, vectors, int(source_version), event_time))

    def _submit(self, item) -> None:
        """Queue one unit of work (a :class:`Batch`, or what a subclass's ``_consume`` expects)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        self._put(item)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._thread is None:
            return
        if exc_type is None:
            while self._thread.is_alive():
                try:
                    self._queue.put(_DONE, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            self._thread.join()
            self._raise_if_failed()
            return
        self._abort.set()
        self._thread.join(timeout=_JOIN_S)
        if self._thread.is_alive():  # blocked in I/O
            self._interrupt()
            self._thread.join(timeout=_JOIN_S)

    def _put(self, item) -> None:
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    # ------------------------------------------------------------------- writer thread
    def check_abort(self) -> None:
        """Raise :class:`Aborted` once the producer failed (call between units of work)."""
        if self._abort.is_set():
            raise Aborted()

    def _batches(self) -> Iterator[Batch]:
        """The queued batches until the producer is done."""
        while True:
            self.check_abort()
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            yield item

    def _run(self) -> None:
        try:
            if self.before_write is not None:
                self.before_write()  # e.g. the artifact checksums: raises instead of letting anything through
            self._consume(self._batches())
        except BaseException as exc:  # handed to the producer thread, which raises it
            self._error = exc

    def _consume(self, batches: Iterator[Batch]) -> None:
        """Store every batch; return only once all of it is stored (runs on the writer thread)."""
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Unblock the writer thread where it waits on I/O (the producer has failed)."""
