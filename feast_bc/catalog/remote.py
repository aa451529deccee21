"""A catalog on object storage: the same tree as a local catalog, under ``s3://bucket/prefix``.

Every reader and writer of feast_bc works on files; a :class:`RemoteCatalog` keeps a mirror of the
remote tree in a local cache directory and keeps the two in step, so the rest of feast_bc (and its
checksums) runs unchanged on it:

* **pull** (when the catalog is opened, and again under every writer's lock): one LIST of the
  prefix; an object whose ETag differs from what was last pulled is downloaded (atomically, into
  the mirror), a mirrored file whose object is gone is removed. Artifacts are content-addressed and
  never change, so each is downloaded once per machine; verification (sha256 against the
  manifest) runs on the mirror as it does on a local catalog.
* **push** (when a writer's lock is released without error): new files are uploaded first --
  artifacts, tombstones, the publish gate's limits -- then every changed ``manifest.json``, each in
  one conditional PUT (``If-Match`` the ETag pulled under the lock, ``If-None-Match: *`` for a new
  family), then the objects the writer deleted (gc). A manifest is one object, so a reader sees the
  old version or the new one; a publisher killed before its manifest PUT leaves only unreferenced
  artifacts (gc removes them); two publishers racing from different machines cannot both win: the
  loser's PUT fails and it reports :class:`~feast_bc.errors.ConcurrentChangeError` with nothing of
  its publish served.

The mirror lives in ``$FEAST_BC_CACHE_DIR`` (default ``$XDG_CACHE_HOME/feast_bc`` or
``~/.cache/feast_bc``), one directory per catalog URI; deleting it costs only a new download.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path

from feast_bc.atomic import atomic_write, atomic_write_bytes, exclusive_lock
from feast_bc.catalog import Catalog
from feast_bc.catalog.layout import LOCKS_DIRNAME
from feast_bc.catalog.object_store import ObjectStore
from feast_bc.errors import ConcurrentChangeError
from feast_bc.machine_dirs import mirror_dir
from feast_bc.manifest import MANIFEST_FILENAME

logger = logging.getLogger(__name__)

_STATE_FILE = ".remote-state.json"  # relative key -> ETag of every object as last pulled
_PULL_LOCK = ".pull.lock"
_WRITE_LOCK = ".write.lock"


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _is_mutable(rel: str) -> bool:
    """Files rewritten in place (everything else is content-addressed or write-once)."""
    return rel.endswith(MANIFEST_FILENAME) or "/" not in rel or rel.startswith(".dropped/")


class RemoteCatalog(Catalog):
    """A :class:`~feast_bc.catalog.Catalog` whose files live on object storage (see the module)."""

    def __init__(
        self,
        uri: str,
        *,
        repo: str | Path | None = None,
        mirror: str | Path | None = None,
        families: list[str] | None = None,
    ):
        """Open the catalog at ``uri``: pull every object (only ``families``' and the catalog-wide
        files when given) into the mirror (``mirror``: default, this machine's cache)."""
        self.store = ObjectStore(uri)
        self.uri = self.store.uri
        super().__init__(Path(mirror) if mirror is not None else mirror_dir(self.uri), repo=repo)
        self.root.mkdir(parents=True, exist_ok=True)
        self.pulled: dict[str, str] = {}
        self.pull(families)

    def __repr__(self) -> str:
        return f"RemoteCatalog({self.uri!r})"

    @property
    def location(self) -> str:
        return self.uri

    def remote_url(self, path: Path) -> str:
        """The object URL of a file of the mirror."""
        return self.store.url(Path(path).absolute().relative_to(self.root).as_posix())

    def local_file(self, source: str | Path) -> Path:
        """The mirror file of an object URL under this catalog (other paths returned as they are)."""
        text = str(source)
        if text.startswith(self.uri + "/"):
            return self.root / text[len(self.uri) + 1 :]
        return Path(source)

    # ------------------------------------------------------------------------------ sync
    def pull(self, families: list[str] | None = None) -> None:
        """Bring the mirror to the remote state (downloads only objects that changed); with
        ``families``, only theirs and the catalog-wide files (the gate's limits, tombstones)."""
        wanted = None if families is None else tuple(f"{f}/" for f in families)

        def in_scope(rel: str) -> bool:
            return wanted is None or rel.startswith(wanted) or "/" not in rel or rel.startswith(".")

        with exclusive_lock(self.root / LOCKS_DIRNAME / _PULL_LOCK):
            state = self._read_state()
            remote = {rel: etag for rel, etag in self.store.list().items() if in_scope(rel)}
            for rel, etag in sorted(remote.items()):
                local = self.root / rel
                # An artifact's name is its content hash: one already here is never fetched again
                # (and is verified against the manifest before use, as on a local catalog).
                current = local.is_file() and (state.get(rel) == etag or not _is_mutable(rel))
                if not current:
                    local.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write(local, lambda tmp, rel=rel: self.store.download(rel, tmp))
                state[rel] = etag
            for rel in sorted(r for r in set(state) - set(remote) if in_scope(r)):
                with contextlib.suppress(FileNotFoundError):
                    (self.root / rel).unlink()
                del state[rel]
            self._write_state(state)
            self.pulled = dict(state)

    def _local_files(self) -> dict[str, Path]:
        out = {}
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if not path.is_file() or rel.startswith(f"{LOCKS_DIRNAME}/") or rel == _STATE_FILE:
                continue
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                continue
            out[rel] = path
        return out

    def push(self) -> None:
        """Send what a writer changed in the mirror: new files, then manifests (conditionally), then deletions."""
        state = dict(self.pulled)
        local = self._local_files()
        changed = [r for r, p in sorted(local.items()) if r not in state or (_is_mutable(r) and _md5(p) != state[r])]
        manifests = [r for r in changed if r.endswith(MANIFEST_FILENAME)]
        others = [r for r in changed if r not in manifests]
        try:
            for rel in others:
                if _is_mutable(rel):
                    state[rel] = self.store.put(rel, local[rel].read_bytes())
                else:
                    self.store.upload(rel, local[rel])
                    state[rel] = ""  # content-addressed: its ETag is never compared
            for rel in manifests:
                state[rel] = self.store.put(
                    rel, local[rel].read_bytes(), if_match=state.get(rel), if_absent=rel not in state
                )
        except ConcurrentChangeError:
            for rel in manifests:  # the mirror holds a manifest the remote refused: fetch it again next time
                state.pop(rel, None)
                with contextlib.suppress(FileNotFoundError):
                    local[rel].unlink()
            raise
        finally:
            self._write_state(state)
        gone = sorted(set(state) - set(local))
        if gone:
            self.store.delete(gone)
            for rel in gone:
                del state[rel]
        self._write_state(state)
        self.pulled = state

    @contextlib.contextmanager
    def writing(self):
        """Around every change: this machine's writers take turns on the mirror, which is pulled
        first and pushed after. A writer that raises pushes nothing (the next pull restores the mirror)."""
        with exclusive_lock(self.root / LOCKS_DIRNAME / _WRITE_LOCK):
            self.pull()
            yield
            self.push()

    @contextlib.contextmanager
    def lock(self, family: str):
        """The writers' lock of one family (:meth:`writing` around the local lock)."""
        with super().lock(family), self.writing():
            yield

    def _read_state(self) -> dict[str, str]:
        path = self.root / _STATE_FILE
        try:
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return {}

    def _write_state(self, state: dict[str, str]) -> None:
        atomic_write_bytes(self.root / _STATE_FILE, json.dumps(state, sort_keys=True).encode())
