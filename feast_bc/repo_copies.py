"""Telling a copied repo from a moved one, without any path in what Feast registers.

A ``cp -a`` of a feast_bc repo copies its local registry too. ``feast apply`` in the copy would then
act for the original: on SQLite, Feast's registry records the *original's* online tables (its
``infra`` holds their absolute paths, written by Feast) and the apply drops them; on Redis the copy
writes the same online keys as the original (same project, same store). A moved repo -- or the same
repo mounted at another path -- is not a copy and must apply as it is.

Two records tell them apart, neither of them stored by feast_bc in the repo, the catalog or the
registry:

- SQLite: the database files the registry's ``infra`` records for the family's tables. One outside
  this repo that still exists belongs to the repo the registry was applied from.
- other online stores (Redis, ...): a machine-local claim, written at every successful apply, of
  which repo last applied (project, online store). A claim naming another repo that still exists
  and still registers the project there marks this one a copy. Claims live in
  ``$FEAST_BC_STATE_DIR`` (default ``$XDG_STATE_HOME/feast_bc`` or ``~/.local/state/feast_bc``),
  like git's record of its worktrees; a machine without the original has no claim and no copy to
  protect.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from feast_bc.atomic import atomic_write_bytes
from feast_bc.machine_dirs import state_root
from feast_bc.registries import Profile, RegisteredFamily, read_profile, registered_families

logger = logging.getLogger(__name__)


def _store_identity(profile: Profile) -> str | None:
    """What names the online store a profile writes to, for claims (None: SQLite, checked by infra)."""
    store = dict(profile.online_store or {})
    kind = store.get("type") or "sqlite"
    if kind == "sqlite":
        return None
    if kind == "redis":
        conn = str(store.get("connection_string") or "localhost:6379")
        return "redis:" + ",".join(sorted(part.strip() for part in conn.split(",") if "password" not in part))
    return json.dumps({k: v for k, v in store.items() if "password" not in str(k)}, sort_keys=True, default=str)


def _claim_file(profile: Profile) -> Path | None:
    identity = _store_identity(profile)
    if identity is None or not profile.project:
        return None
    key = hashlib.sha256(json.dumps([profile.project, identity]).encode()).hexdigest()[:32]
    return state_root() / "applied" / f"{key}.json"


def record_apply(profile: Profile, repo: Path) -> None:
    """Claim (project, online store) for ``repo`` after a successful apply guard."""
    path = _claim_file(profile)
    if path is None:
        return
    record = {"project": profile.project, "repo": str(Path(repo).resolve()), "profile": profile.name}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(record) + "\n").encode())
    except OSError as exc:
        logger.warning(
            "feast_bc cannot record this apply in %s (%s): a later copy of the repo goes unnoticed", path, exc
        )


def _claimant(profile: Profile) -> Path | None:
    path = _claim_file(profile)
    if path is None or not path.is_file():
        return None
    try:
        return Path(json.loads(path.read_text())["repo"])
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("feast_bc ignores an unreadable claim %s", path)
        return None


def copied_from(reg: RegisteredFamily, repo: Path) -> str | None:
    """The repo (or its online store) that ``reg``'s registry was applied from, when it is another
    one that still exists: this repo is a copy of it. None for the repo's own registry or a move."""
    own = Path(repo).resolve()
    for db in sorted(reg.sqlite_files):
        if not db.is_relative_to(own) and db.exists():
            return f"the repo whose SQLite online store is {db}"
    other = _claimant(reg.profile)
    if other is None or other == own or not other.is_dir():
        return None
    yaml_file = other / reg.profile.name
    if not yaml_file.is_file():
        return None
    try:
        still = registered_families(read_profile(yaml_file, other))
    except (OSError, ValueError):
        return None
    return f"the repo at {other}" if reg.family in still else None
