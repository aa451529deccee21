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
"""

from __future__ import annotations

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    import warnings

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
    _installed = True
