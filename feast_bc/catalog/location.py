"""Where a repo's catalog lives: declared once in the repo, never baked into what Feast registers.

By default the catalog is ``bc_catalog/`` inside the feature repo. A repo may declare another
place in its ``feature_store*.yaml`` (Feast keeps unknown top-level blocks; every profile of the
repo that declares it must say the same)::

    feast_bc:
      catalog: ../catalogs/recsys   # relative to the repo (or an absolute path)
      # catalog: s3://bucket/prefix   # or on S3-compatible object storage (feast_bc.catalog.remote)

Nothing registered with Feast names the location: a view names only its family and version, and
whoever runs it -- feast_bc's engines, the UDF inside Feast's own engines, the ``feast-bc`` CLI --
resolves the location from the repo it runs in. So a repo that is moved, copied or mounted
elsewhere (another directory, a container at ``/repo``) reads the catalog that sits with it, and
``feast apply`` output never prints a local path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from feast_bc.catalog.layout import CATALOG_DIRNAME
from feast_bc.catalog.object_store import is_uri, uri_problem
from feast_bc.errors import ConfigurationError
from feast_bc.registries import PROFILE_GLOB

SETTINGS_BLOCK = "feast_bc"  # the top-level block of feature_store*.yaml feast_bc reads
CATALOG_KEY = "catalog"
DEFAULT_LOCATION = CATALOG_DIRNAME  # relative to the repo
_KNOWN_KEYS = frozenset({CATALOG_KEY})


def location_in(settings: object, where: str) -> str:
    """The catalog location a ``feast_bc:`` block declares (the default when it declares none).

    ``where`` names the block's file in the one-line error a bad value gets.
    """
    if settings is None:
        return DEFAULT_LOCATION
    if not isinstance(settings, Mapping):
        raise ConfigurationError(
            f"{where}: the `{SETTINGS_BLOCK}:` block must be a mapping such as `{SETTINGS_BLOCK}: {{catalog: bc_catalog}}`"
        )
    unknown = sorted(set(map(str, settings)) - _KNOWN_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key(s) {unknown} in the `{SETTINGS_BLOCK}:` block; the only one is `{CATALOG_KEY}`"
        )
    value = settings.get(CATALOG_KEY, DEFAULT_LOCATION)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            f"{where}: `{SETTINGS_BLOCK}.{CATALOG_KEY}` must be a directory (relative to the repo), got {value!r}"
        )
    if is_uri(value):
        problem = uri_problem(value)
        if problem:
            raise ConfigurationError(f"{where}: `{SETTINGS_BLOCK}.{CATALOG_KEY}: {value}` -- {problem}")
    return value


def repo_location(repo: str | Path) -> str:
    """The catalog location the repo's ``feature_store*.yaml`` profiles declare (every one agreeing)."""
    found: dict[str, str] = {}
    for yaml_path in sorted(Path(repo).glob(PROFILE_GLOB)):
        try:
            raw = yaml.safe_load(os.path.expandvars(yaml_path.read_text()))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue  # an unreadable profile is reported by whoever reads it for Feast
        if isinstance(raw, dict) and SETTINGS_BLOCK in raw:
            found[yaml_path.name] = location_in(raw[SETTINGS_BLOCK], str(yaml_path))
    if len(set(found.values())) > 1:
        listed = ", ".join(f"{name}: {loc!r}" for name, loc in sorted(found.items()))
        raise ConfigurationError(
            f"{repo}: the profiles declare different catalogs ({listed}); a repo has one catalog -- make every "
            f"`{SETTINGS_BLOCK}.{CATALOG_KEY}` the same"
        )
    return next(iter(found.values()), DEFAULT_LOCATION)


def config_location(repo_config) -> str:
    """The catalog location of a running Feast configuration (its ``feast_bc:`` block, if any)."""
    extra = getattr(repo_config, "model_extra", None) or {}
    return location_in(extra.get(SETTINGS_BLOCK), "the feature_store yaml")


def catalog_root(repo: str | Path, location: str) -> Path:
    """The catalog directory a local location names, relative locations taken from the repo."""
    path = Path(location).expanduser()
    return path if path.is_absolute() else Path(repo).absolute() / path
