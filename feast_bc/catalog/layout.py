"""Where everything lives inside a catalog directory, and nothing else.

Layout (inside a Feast repo the catalog is ``<repo>/bc_catalog``)::

    <catalog>/<family>/manifest.json                        # FamilyManifest, sealed with its sha256
    <catalog>/<family>/artifacts/v0003-embeddings-<sha16>.parquet
    <catalog>/<family>/artifacts/v0003-transform-<sha16>.safetensors
    <catalog>/.locks/<family>.lock                          # serializes writers of one family
    <catalog>/.locks/<family>.online.lock                   # pushes vs. materializations (online writes)
    <catalog>/<family>/pushes/v0003-000001-<micros>-<sha256>.parquet   # the push log (push_log.py)
    <catalog>/.dropped/<family>.json                        # tombstone: family removed on purpose

The lock lives outside the family directory so that a refused first publish leaves no directory
behind; a tombstone is what lets `feast apply` delete a family's views instead of refusing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from feast_bc.manifest import MANIFEST_FILENAME
from feast_bc.naming import family_name_problem

CATALOG_DIRNAME = "bc_catalog"
ARTIFACTS_DIRNAME = "artifacts"
LOCKS_DIRNAME = ".locks"
DROPPED_DIRNAME = ".dropped"

logger = logging.getLogger(__name__)


def looks_like_catalog(path: Path) -> bool:
    """A catalog directory itself (rather than the feature repo holding one)."""
    return (
        path.name == CATALOG_DIRNAME
        or any(path.glob(f"*/{MANIFEST_FILENAME}"))
        or (path / LOCKS_DIRNAME).is_dir()
        or (path / DROPPED_DIRNAME).is_dir()
    )


def lock_path(root: Path, family: str) -> Path:
    return root / LOCKS_DIRNAME / f"{family}.lock"


def online_lock_path(root: Path, family: str) -> Path:
    """Held shared by every materialization of the family on this machine and exclusively by a push
    while it writes the online stores (:meth:`CatalogReader.online_lock
    <feast_bc.catalog.reader.CatalogReader.online_lock>`)."""
    return root / LOCKS_DIRNAME / f"{family}.online.lock"


def tombstone_path(root: Path, family: str) -> Path:
    return root / DROPPED_DIRNAME / f"{family}.json"


def artifact_stem(version: int, kind: str) -> str:
    """File-name stem of a version's artifact (the content hash and suffix follow it)."""
    return f"v{version:04d}-{kind}"


def artifact_ref_path(path: Path) -> str:
    """How a manifest names a file of the family's artifacts directory (relative, POSIX)."""
    return f"{ARTIFACTS_DIRNAME}/{path.name}"


def read_tombstones(root: Path) -> dict[str, dict]:
    """Family -> its tombstone (when and from which manifest it was dropped)."""
    folder = root / DROPPED_DIRNAME
    if not folder.is_dir():
        return {}
    out = {}
    for path in sorted(folder.glob("*.json")):
        if family_name_problem(path.stem):
            logger.debug("ignoring tombstone %s: %s", path, family_name_problem(path.stem))
            continue
        try:
            out[path.stem] = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError):
            out[path.stem] = {"family": path.stem, "note": f"unreadable tombstone {path}"}
    return out


def family_files(family_dir: Path) -> list[Path]:
    """What a family directory holds besides a legacy lock file and an empty artifacts dir.

    A symlinked artifacts directory is not looked into: what it holds may belong to other
    families sharing it, so it says nothing about this one.
    """
    found = []
    for entry in family_dir.iterdir():
        if entry.name == ".lock":
            continue
        if entry.name == ARTIFACTS_DIRNAME and entry.is_symlink():
            continue
        if entry.name == ARTIFACTS_DIRNAME and entry.is_dir():
            found += list(entry.iterdir())
            continue
        found.append(entry)
    return found


def family_state(family_dir: Path) -> str:
    """'published' (manifest present), 'absent' (no directory, or one holding nothing but a lock or an
    empty artifacts dir: never published), 'missing_manifest' (files but no manifest) or 'dropped'
    (removed on purpose: a tombstone, see ``feast-bc drop-family``)."""
    if family_dir.name in read_tombstones(family_dir.parent):
        return "dropped"
    manifest = family_dir / MANIFEST_FILENAME
    if manifest.exists() or manifest.is_symlink():
        return "published"
    if not family_dir.is_dir():
        return "absent"
    return "absent" if not family_files(family_dir) else "missing_manifest"


def ignored_entries(root: Path) -> list[str]:
    """Directories in the catalog that cannot be families (invalid names): reported, never served."""
    if not root.is_dir():
        return []
    return [
        f"{p} is not a family directory: {family_name_problem(p.name)}"
        for p in sorted(root.iterdir())
        if not p.name.startswith(".") and p.is_dir() and family_name_problem(p.name)
    ]
