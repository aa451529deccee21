"""Where this machine keeps its mirrors of catalogs on object storage (pure path arithmetic).

Kept apart from :mod:`feast_bc.catalog.remote` (which talks to the store) so the registry reader
and the materialization pass can map a registered object URL to its mirror file without opening
a catalog or importing the catalog package.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_DIR_ENV_VAR = "FEAST_BC_CACHE_DIR"


def cache_root() -> Path:
    """``$FEAST_BC_CACHE_DIR``, else ``$XDG_CACHE_HOME/feast_bc``, else ``~/.cache/feast_bc``."""
    explicit = os.environ.get(CACHE_DIR_ENV_VAR)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "feast_bc"


def mirror_dir(uri: str) -> Path:
    """The mirror directory of the catalog at ``uri`` (one per catalog URI and machine)."""
    return cache_root() / "catalogs" / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]


def mirror_file(url: str) -> Path:
    """The mirror file of an artifact's object URL ``<catalog uri>/<family>/artifacts/<name>``."""
    catalog_uri, family, artifacts, name = url.rsplit("/", 3)
    return mirror_dir(catalog_uri) / family / artifacts / name
