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
        previous(exc_type, exc, tb)

    sys.excepthook = hook
    _hook_installed = True


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
