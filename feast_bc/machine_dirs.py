"""Where this machine keeps feast_bc's own files (pure path arithmetic, no I/O).

Two places, each overridable by one environment variable and otherwise where the XDG base
directory convention puts them:

* the cache -- mirrors of catalogs on object storage (:mod:`feast_bc.catalog.remote`), deletable at
  the cost of a new download: ``$FEAST_BC_CACHE_DIR``, else ``$XDG_CACHE_HOME/feast_bc``, else
  ``~/.cache/feast_bc``;
* the state -- which repo last applied a (project, online store) (:mod:`feast_bc.repo_copies`):
  ``$FEAST_BC_STATE_DIR``, else ``$XDG_STATE_HOME/feast_bc``, else ``~/.local/state/feast_bc``.

Kept apart from the catalog package so the registry reader and the materialization pass can map
a registered object URL to its mirror file without opening a catalog.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_DIR_ENV_VAR = "FEAST_BC_CACHE_DIR"
STATE_DIR_ENV_VAR = "FEAST_BC_STATE_DIR"


def _machine_dir(explicit: str, xdg: str, default: Path) -> Path:
    if os.environ.get(explicit):
        return Path(os.environ[explicit])
    return Path(os.environ.get(xdg) or default) / "feast_bc"


def cache_root() -> Path:
    return _machine_dir(CACHE_DIR_ENV_VAR, "XDG_CACHE_HOME", Path.home() / ".cache")


def state_root() -> Path:
    return _machine_dir(STATE_DIR_ENV_VAR, "XDG_STATE_HOME", Path.home() / ".local" / "state")


def mirror_dir(uri: str) -> Path:
    """The mirror directory of the catalog at ``uri`` (one per catalog URI and machine)."""
    return cache_root() / "catalogs" / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]


def mirror_file(url: str) -> Path:
    """The mirror file of an artifact's object URL ``<catalog uri>/<family>/artifacts/<name>``."""
    catalog_uri, family, artifacts, name = url.rsplit("/", 3)
    return mirror_dir(catalog_uri) / family / artifacts / name
