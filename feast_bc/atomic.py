"""Crash-safe file primitives: atomic replace, content hashing, an exclusive publish lock.

A reader (Feast materializing, a consumer exporting) must only ever see a file that is either
absent or complete, so every write goes to a temporary file in the same directory, is fsync'ed,
and is renamed over the target; the directory is fsync'ed so the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

_CHUNK = 1 << 20
#: mkstemp creates 0600 files; published files are meant to be read by other users (Feast, consumers).
FILE_MODE = 0o644


def fsync_dir(path: Path) -> None:
    """Make a rename/creation inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _temp_file(directory: Path, prefix: str) -> Iterator[Path]:
    """A fresh temporary file in ``directory`` (created if needed), removed again on any exception."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{prefix}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _fill(tmp: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill ``tmp``, then make its bytes durable and readable by other users."""
    write(tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, FILE_MODE)


def _rename_into_place(tmp: Path, target: Path) -> None:
    os.replace(tmp, target)
    fsync_dir(target.parent)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary sibling of ``path``, then rename it into place.

    ``write`` receives the temporary path (so libraries such as pyarrow can write to it by name).
    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    with _temp_file(path.parent, path.name) as tmp:
        _fill(tmp, write)
        _rename_into_place(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_content_addressed(
    directory: Path, stem: str, suffix: str, write: Callable[[Path], None]
) -> tuple[Path, str, int]:
    """Write a new file named ``<stem>-<sha256[:16]><suffix>`` atomically; return (path, sha256, size).

    Naming by content means a publish never overwrites a file some reader may be using, and a
    retried publish of the same bytes lands on the same name.
    """
    return write_named_by_content(directory, stem, write, lambda digest: f"{stem}-{digest[:16]}{suffix}")


def write_named_by_content(
    directory: Path, prefix: str, write: Callable[[Path], None], name: Callable[[str], str]
) -> tuple[Path, str, int]:
    """Let ``write`` fill a temporary file in ``directory``, make it durable, then rename it to
    ``name(its sha256)``; return (path, sha256, size). Killed at any point, it leaves a whole file
    or none (at most a temporary ``.<prefix>.*.tmp`` file, which gc removes)."""
    with _temp_file(directory, prefix) as tmp:
        _fill(tmp, write)
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
        final = directory / name(digest)
        _rename_into_place(tmp, final)
        return final, digest, size


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Serialize publishers of one family across processes (released if the holder dies)."""
    with file_lock(lock_path, shared=False):
        yield


@contextlib.contextmanager
def file_lock(lock_path: Path, *, shared: bool) -> Iterator[None]:
    """A lock between processes of this machine: any number of ``shared`` holders, or one exclusive
    one (released if the holder dies)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
