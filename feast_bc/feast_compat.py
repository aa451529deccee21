"""A narrowly scoped fix for a Feast 0.67 bug that would break `feast apply` on feast_bc repos.

``feast.diff.registry_diff.diff_registry_objects`` assumes that any changed
``feature_transformation`` belongs to an OnDemandFeatureView and calls
``spec.HasField("user_defined_function")``, which raises
``ValueError: Protocol message FeatureViewSpec has no "user_defined_function" field`` for a
BatchFeatureView whose UDF text changed (reproduced with the CLI; the Python ``FeatureStore.apply``
does not diff and is unaffected).

feast_bc keeps its UDF text stable across publishes, so the bug only bites when that text does
change (the repo's catalog was moved, or a feast_bc upgrade changed the shim). The wrapper below
delegates to Feast and, only on that exact error, computes the diff itself field by field. It is
installed when the repo definitions are built, i.e. inside `feast apply`, and never in consumers.
It also silences Feast's "Batch feature views are experimental" warning in that process.

:func:`install_cli_error_hook` (installed by the same call, by :mod:`feast_bc.engine` and by the
view UDFs) makes the `feast` command line print a feast_bc refusal as one line instead of a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from feast_bc.errors import FeastBCError

_installed = False
_hook_installed = False
TRACEBACK_ENV_VAR = "FEAST_BC_TRACEBACK"


def install_cli_error_hook() -> None:
    """Inside the `feast` command line only: a feast_bc refusal is printed as one clear line.

    Feast's CLI lets exceptions escape to Python, which prints a traceback whose last line is the
    only useful one. For a :class:`~feast_bc.errors.FeastBCError` (feast_bc refused; it names the
    problem and what to do) the hook prints ``feast: error: <Type>: <message>`` instead; the exit
    status stays non-zero (1). Everything else -- and every process that is not the `feast` CLI,
    such as a consumer's or a library caller's -- is left alone. ``FEAST_BC_TRACEBACK=1`` turns the
    hook off.
    """
    global _hook_installed
    if _hook_installed or Path(sys.argv[0] if sys.argv else "").name != "feast" or os.environ.get(TRACEBACK_ENV_VAR):
        return
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if isinstance(exc, FeastBCError):
            print(f"feast: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            print(f"(refused by feast_bc; {TRACEBACK_ENV_VAR}=1 shows the traceback)", file=sys.stderr)
            return
        line = store_error_line(exc)
        if line is not None:
            print(f"feast: error: {line}", file=sys.stderr)
            print(f"(said by feast_bc; {TRACEBACK_ENV_VAR}=1 shows the traceback)", file=sys.stderr)
            return
        previous(exc_type, exc, tb)

    sys.excepthook = hook
    _hook_installed = True


def sqlite_error_kind(exc: BaseException) -> str | None:
    """'locked', 'full' (volume full, file size limit, disk failure) or 'missing' (no such table) for
    a SQLite ``OperationalError``; None for anything else. What the one-line messages of the engine
    (:func:`feast_bc.engine.explain_store_error`) and of the CLI hook (:func:`store_error_line`) tell apart."""
    import sqlite3

    if not isinstance(exc, sqlite3.OperationalError):
        return None
    text = str(exc)
    if "locked" in text:
        return "locked"
    if "full" in text or "disk I/O error" in text:
        return "full"
    if "no such table" in text:
        return "missing"
    return None


def store_error_line(exc: BaseException) -> str | None:
    """One line for an online store's raw error that escaped Feast itself (e.g. from `feast apply`
    creating tables), or None. Materializations get theirs, naming the views, from the engine
    (:func:`feast_bc.engine.explain_store_error`)."""
    kind = sqlite_error_kind(exc)
    if kind == "locked":
        return (
            f"the SQLite online store is locked by another process ({exc}): a materialization, or a process "
            "holding a write transaction on it. Run the same command again once that is done"
        )
    if kind == "full":
        return (
            f"SQLite could not write ({exc}): the volume is full, a file size limit was reached, or the disk "
            "failed. Free space (or fix the volume), then run the same command again"
        )
    if kind == "missing":
        return (
            f"the SQLite online store lacks a table the registry lists ({exc}): it was torn down or replaced. "
            "Run `feast apply` (it creates the tables again), then `feast materialize`"
        )
    try:
        import redis.exceptions as rex
    except ImportError:  # pragma: no cover - redis is a dependency
        return None
    if isinstance(exc, (rex.ConnectionError, rex.TimeoutError)):
        return (
            f"Redis is unreachable ({exc}): check the connection string of the feature_store yaml "
            "(or $FEAST_BC_REDIS), then run the same command again once Redis is up"
        )
    return None


def restore_torn_down_sqlite_tables(repo_path: Path, yaml_file: Path | None, views: list) -> list[str]:
    """Create the online tables of ``views`` (the feature views `feast apply` is applying) that a SQLite
    profile's registry records as created but the database lacks; return their names.

    Why: `feast teardown` deletes the online database and empties the registry's views but keeps its
    record of the infrastructure, so the next `feast apply` registers every view again, says "No
    changes to infrastructure", and every read and materialization then fails with ``no such
    table``. Called inside `feast apply` of a feast_bc repo (by
    :func:`feast_bc.feast_objects.feast_objects`, after its refusals), it runs Feast's own
    ``SqliteOnlineStore.update`` -- the statements apply would have run -- for exactly those views.
    A first apply (no registry yet) is left to Feast.
    """
    import logging
    import sqlite3

    from feast_bc.registries import DEFAULT_PROFILE_FILENAME, read_profile

    repo_path = Path(repo_path).absolute()
    yaml = Path(yaml_file) if yaml_file else repo_path / DEFAULT_PROFILE_FILENAME
    if not views or not yaml.is_file():
        return []
    profile = read_profile(yaml, repo_path)
    store_cfg = profile.online_store or {}
    registry = profile.registry
    if profile.problem or store_cfg.get("type", "sqlite") != "sqlite" or registry is None or not registry.is_file():
        return []
    db = Path(store_cfg.get("path") or "data/online.db")
    db = db if db.is_absolute() else repo_path / db
    tables: set[str] = set()
    if db.is_file():
        with sqlite3.connect(db) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    recorded = _recorded_sqlite_tables(registry)
    missing = [
        view for view in views if f"{profile.project}_{view.name}" in recorded - tables
    ]  # a new view's table is Feast's to create
    if not missing:
        return []
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo_path), fs_yaml_file=yaml)
    store._get_provider().online_store.update(store.config, [], missing, [], [], partial=True)
    names = [view.name for view in missing]
    logging.getLogger(__name__).warning(
        "%s: the online tables of %d view(s) were missing although the registry exists (`feast teardown`?): "
        "created them: %s; run `feast materialize` to fill them",
        yaml.name,
        len(names),
        ", ".join(names),
    )
    return names


def _recorded_sqlite_tables(registry: Path) -> set[str]:
    """The SQLite tables a registry file records as created (its ``infra``), by name."""
    from feast.protos.feast.core.Registry_pb2 import Registry

    proto = Registry()
    try:
        proto.ParseFromString(registry.read_bytes())
    except Exception:  # noqa: BLE001 - protobuf's DecodeError: the apply itself reports it
        return set()
    return {o.sqlite_table.name for o in proto.infra.infra_objects if o.WhichOneof("infra_object") == "sqlite_table"}


def install() -> None:
    global _installed
    install_cli_error_hook()
    if _installed:
        return
    # Imported here, not at the top: the view UDFs install the error hook in processes (and
    # imports, see tests/test_package.py) that must not pay for loading Feast.
    from feast.diff import registry_diff

    # Every feast_bc view is a BatchFeatureView, and Feast warns "experimental" each time one is
    # built (also when the registry is read back). Inside `feast apply` of a feast_bc repo that is
    # pure noise; consumers, who never import feast_bc, are unaffected.
    warnings.filterwarnings("ignore", message="Batch feature views are experimental", category=RuntimeWarning)

    original = registry_diff.diff_registry_objects

    def diff_registry_objects(current, new, object_type):
        try:
            return original(current, new, object_type)
        except ValueError as exc:
            if "user_defined_function" not in str(exc):
                raise
        current_spec = current.to_proto().spec
        new_spec = new.to_proto().spec
        diffs = [
            registry_diff.PropertyDiff(field.name, getattr(current_spec, field.name), getattr(new_spec, field.name))
            for field in current_spec.DESCRIPTOR.fields
            if field.name not in registry_diff.FIELDS_TO_IGNORE
            and getattr(current_spec, field.name) != getattr(new_spec, field.name)
        ]
        return registry_diff.FeastObjectDiff(
            name=new_spec.name,
            feast_object_type=object_type,
            current_feast_object=current,
            new_feast_object=new,
            feast_object_property_diffs=diffs,
            transition_type=registry_diff.TransitionType.UPDATE if diffs else registry_diff.TransitionType.UNCHANGED,
        )

    diff_registry_objects.__wrapped__ = original  # type: ignore[attr-defined]
    registry_diff.diff_registry_objects = diff_registry_objects
    _install_atomic_registry_write()
    _installed = True


def _install_atomic_registry_write() -> None:
    """Feast 0.67 writes a file registry in place with one unbuffered ``write`` whose count it
    ignores: on a full volume (or a file size limit) the registry is left truncated, every later
    read fails with ``DecodeError``, and `feast apply` still exits 0. feast_bc's repos replace that
    write by a temporary file, fsync and rename (:func:`feast_bc.atomic.atomic_write_bytes`) and
    read the result back, so a failed write keeps the previous registry and is one clear error."""
    import uuid

    from feast.infra.registry.file import FileRegistryStore
    from feast.utils import _utc_now

    from feast_bc.atomic import atomic_write_bytes
    from feast_bc.errors import RegistryWriteError

    def _write_registry(self, registry_proto) -> None:
        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(_utc_now())
        data = registry_proto.SerializeToString()
        path = Path(self._filepath)
        try:
            atomic_write_bytes(path, data)
            intact = path.read_bytes() == data
        except OSError as exc:
            raise RegistryWriteError(
                f"the Feast registry {path} could not be written ({exc.strerror or exc}); the previous registry is "
                "kept. Free space on that volume (or lift the file size limit), then run `feast apply` again"
            ) from exc
        if not intact:
            raise RegistryWriteError(
                f"the Feast registry {path} reads back other bytes than were written; run `feast apply` again"
            )

    _write_registry.__wrapped__ = FileRegistryStore._write_registry  # type: ignore[attr-defined]
    FileRegistryStore._write_registry = _write_registry
