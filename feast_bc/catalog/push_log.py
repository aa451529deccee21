"""The durable record of pushes: new or changed entities' vectors between two published versions.

A push (:mod:`feast_bc.pusher`) carries z_k of some entities, embedded by the model of the latest
version k. Before anything reaches an online store it is appended here, so that everything that
computes values from the latest embeddings -- `feast materialize` through feast_bc's engines,
`feast-bc export`, the audit, the publish gate, drift, the next version's training targets --
sees the same values the push wrote (:meth:`CatalogReader.latest_embeddings
<feast_bc.catalog.reader.CatalogReader.latest_embeddings>` overlays them).

Layout: one immutable parquet segment per push, in the family's ``pushes/`` directory::

    <family>/pushes/v0003-000007-<event micros>-<sha256>.parquet

``v0003`` is the version whose model embedded the vectors, ``000007`` the push's number within
that version (1, 2, ... without gaps), the event micros its event timestamp (every row of the
segment carries it; strictly later than the version's publish and than the previous push) and the
sha256 is the file's own content. Each segment also names the sha256 of the one before it in its
parquet metadata, so the log is a hash chain: an edited, torn, renamed or removed segment (other
than the newest) is refused on read. A segment is written to a temporary file, fsynced and renamed
into place (then the directory fsynced): a push killed at any point leaves either no segment or a
whole one, never a partial one. Segments are write-once, which is also what lets a catalog on
object storage carry them unchanged (:mod:`feast_bc.catalog.remote`).

The next publish folds the log in: version k+1 must hold every pushed id, and once it is
published the segments of version k are garbage (``feast-bc gc`` removes them unless a registry
still serves version k as its latest).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feast_bc.atomic import sha256_file, write_named_by_content
from feast_bc.embeddings import embeddings_table, list_array_to_matrix, lookup
from feast_bc.errors import ChecksumMismatchError, CorruptArtifactError
from feast_bc.naming import EMBEDDING_FEATURE, TIMESTAMP_COLUMN

PUSHES_DIRNAME = "pushes"
_NAME = re.compile(r"^v(\d{4,})-(\d{6,})-(\d{1,19})-([0-9a-f]{64})\.parquet$")
_PREVIOUS_KEY = b"feast_bc.previous_sha256"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PushSegment:
    """One push as the log names it (parsed from its file name)."""

    path: Path
    version: int
    number: int
    micros: int
    sha256: str

    @property
    def event_time(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.micros)


@dataclass(frozen=True)
class PushedRows:
    """Every entity pushed for one version, each with its newest pushed vector and that push's
    event timestamp (microseconds): what overlays the version's published file."""

    version: int
    ids: np.ndarray
    vectors: np.ndarray
    micros: np.ndarray
    segments: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def last_micros(self) -> int:
        return int(self.micros.max())


def pushes_dir(family_dir: Path) -> Path:
    return family_dir / PUSHES_DIRNAME


def _parsed(folder: Path, name: str) -> PushSegment | None:
    """The segment a file name names (None: not a segment, e.g. a killed push's temporary file)."""
    m = _NAME.match(name)
    return None if m is None else PushSegment(folder / name, int(m[1]), int(m[2]), int(m[3]), m[4])


def segments(family_dir: Path, version: int | None = None) -> list[PushSegment]:
    """The family's push segments (of ``version`` only, if given), oldest first per version.

    Files that are not segments (temporary files of a killed push) are left to ``feast-bc gc``;
    a gap in a version's numbering means a segment was removed: refused."""
    folder = pushes_dir(family_dir)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    parsed = (_parsed(folder, name) for name in names)
    found = [seg for seg in parsed if seg is not None and (version is None or seg.version == version)]
    found.sort(key=lambda s: (s.version, s.number))
    by_version: dict[int, int] = {}
    for seg in found:
        expected = by_version.get(seg.version, 0) + 1
        if seg.number != expected:
            raise CorruptArtifactError(
                f"push log of {family_dir.name}: version {seg.version} has push {seg.number} but no push "
                f"{expected} ({folder}): a segment was removed or renamed. Restore it from backup; pins keep "
                "what was pushed, but nothing can recompute it until the log is whole"
            )
        by_version[seg.version] = seg.number
    return found


def last_push(family_dir: Path, version: int) -> PushSegment | None:
    """The newest push of ``version`` (None: none yet). Cheap however long the log: names sort by
    (version, number) -- both zero-padded -- so the newest is the greatest name of the version."""
    prefix = f"v{version:04d}-"
    try:
        names = [n for n in os.listdir(pushes_dir(family_dir)) if n.startswith(prefix) and n.endswith(".parquet")]
    except FileNotFoundError:
        return None
    for name in sorted(names, reverse=True):
        seg = _parsed(pushes_dir(family_dir), name)
        if seg is not None and seg.version == version:
            return seg
    return None


def foreign_files(family_dir: Path) -> list[Path]:
    """Files in the pushes directory that are not segments (a killed push's temporary file)."""
    folder = pushes_dir(family_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _parsed(folder, p.name) is None)


def append_push(
    family_dir: Path,
    version: int,
    join_key: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    event_time: datetime,
    previous: PushSegment | None | bool = True,
) -> PushSegment:
    """Write one push as the next segment of ``version`` (the caller holds the family's lock and
    chose ``event_time`` later than the previous push, :func:`next_event_time`). ``previous``: the
    newest segment as the caller just read it under that lock (None: there is none); by default it
    is read here."""
    if previous is True:
        previous = last_push(family_dir, version)
    number = 1 if previous is None else previous.number + 1
    table = embeddings_table(join_key, ids, vectors, event_time, version)
    table = table.replace_schema_metadata({_PREVIOUS_KEY: (previous.sha256 if previous else "").encode()})
    micros = _micros(event_time)
    final, digest, _ = write_named_by_content(
        pushes_dir(family_dir),
        f"v{version:04d}-push",
        # dictionary-encoding float vectors costs ~6x the write and saves nothing
        lambda path: pq.write_table(table, path, compression="none", use_dictionary=[TIMESTAMP_COLUMN]),
        lambda digest: f"v{version:04d}-{number:06d}-{micros}-{digest}.parquet",
    )
    return PushSegment(final, version, number, micros, digest)


def next_event_time(published_at: datetime, previous: PushSegment | None) -> datetime:
    """Now (UTC, microseconds), strictly after the version's publish and the previous push.

    The event timestamp is what keeps a later materialization from writing a pushed entity's older
    published value over it, and what a later publish must come after (:func:`last_micros`)."""
    now = datetime.now(UTC)
    floor = published_at if previous is None else max(published_at, previous.event_time)
    return now if now > floor else floor + timedelta(microseconds=1)


def read_pushes(family_dir: Path, version: int, join_key: str, dim: int) -> PushedRows | None:
    """The verified pushes of ``version`` (None: none), newest vector per entity.

    Every segment's sha256 and its link to the one before are checked, and its rows must carry its
    version and event time: a log that fails is refused rather than partly applied."""
    found = segments(family_dir, version)
    if not found:
        return None
    where = (str(family_dir), version)
    state = (join_key, dim, tuple(_file_state(seg.path) for seg in found))
    cached = _VERIFIED.get(where)
    if cached is not None and cached[0] == state:
        return cached[1]
    pushed = _read_verified(family_dir, version, join_key, dim, found)
    _VERIFIED[where] = (state, pushed)
    return pushed


#: The last verified read of each (family, version) log, by the state of its segments (names, sizes,
#: mtimes, inodes -- as artifact hashes are cached per file state): the probe, the pass, status and
#: drift of one run read and hash the log once; a new or changed segment is read again.
_VERIFIED: dict[tuple[str, int], tuple[tuple, PushedRows]] = {}


def _file_state(path: Path) -> tuple:
    st = os.stat(path)
    return (path.name, st.st_size, st.st_mtime_ns, st.st_ino)


def _read_verified(family_dir: Path, version: int, join_key: str, dim: int, found: list[PushSegment]) -> PushedRows:
    ids, vectors, micros = [], [], []
    previous = ""
    for seg in found:
        origin = f"push {seg.number} of version {seg.version} of {family_dir.name} ({seg.path.name})"
        actual = sha256_file(seg.path)
        if actual != seg.sha256:
            raise ChecksumMismatchError(
                f"{origin} fails its checksum (content {actual[:12]}...): it was edited or torn; restore it from backup"
            )
        try:
            table = pq.read_table(seg.path, columns=[join_key, TIMESTAMP_COLUMN, EMBEDDING_FEATURE])
        except (OSError, KeyError, pa.ArrowInvalid) as exc:
            raise CorruptArtifactError(f"{origin} is unreadable: {exc}") from None
        linked = (pq.read_schema(seg.path).metadata or {}).get(_PREVIOUS_KEY, b"").decode()
        if linked != previous:
            raise CorruptArtifactError(
                f"{origin} follows a push with sha256 {linked[:12] or '(none)'}..., but the log's previous push is "
                f"{previous[:12] or '(none)'}...: segments were replaced or reordered; restore the log from backup"
            )
        stamps = table.column(TIMESTAMP_COLUMN).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        if not (stamps == seg.micros).all():
            raise CorruptArtifactError(f"{origin}: its rows do not carry the event time its name records")
        ids.append(table.column(join_key).to_numpy(zero_copy_only=False))
        vectors.append(list_array_to_matrix(table.column(EMBEDDING_FEATURE), dim, what=origin))
        micros.append(stamps)
        previous = seg.sha256
    all_ids = np.concatenate(ids)
    # newest push of each entity: the last occurrence in push order
    _, last_from_end = np.unique(all_ids[::-1], return_index=True)
    rows = np.sort(len(all_ids) - 1 - last_from_end)
    return PushedRows(
        version=version,
        ids=all_ids[rows],
        vectors=np.concatenate(vectors)[rows],
        micros=np.concatenate(micros)[rows],
        segments=len(found),
    )


def overlay(ids: np.ndarray, vectors: np.ndarray, pushed: PushedRows | None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a published file with the pushes applied: changed ids take their pushed
    vector in place, new ids follow in push order."""
    if pushed is None or not len(pushed):
        return ids, vectors
    if ids.dtype.kind in "UO" or pushed.ids.dtype.kind in "UO":
        ids, pushed_ids = ids.astype(object), pushed.ids.astype(object)
    else:
        pushed_ids = pushed.ids
    rows, known = lookup(ids, pushed_ids)
    out = np.array(vectors, dtype=np.float32, copy=True)
    out[rows[known]] = pushed.vectors[known]
    new = ~known
    if new.any():
        ids = np.concatenate([ids, pushed_ids[new]])
        out = np.concatenate([out, pushed.vectors[new]])
    return ids, out


def obsolete_segments(family_dir: Path, keep_versions: set[int]) -> list[Path]:
    """Segments of versions nothing reads any more (folded into a later publish), and stray files.
    (Not :func:`segments`: a version whose log has a gap is still garbage once folded in.)"""
    folder = pushes_dir(family_dir)
    if not folder.is_dir():
        return []
    parsed = (_parsed(folder, path.name) for path in folder.iterdir())
    return foreign_files(family_dir) + [
        seg.path for seg in parsed if seg is not None and seg.version not in keep_versions
    ]


def _micros(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
