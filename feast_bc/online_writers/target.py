"""What a writer writes to: the store and entity (:class:`StoreTarget`) and one view (:class:`ViewTarget`).

Why a type: every writer needs the same four facts about where it writes -- the repo's config, the
store object, the entity's join key and id type -- and one or more (feature view, dimension)
pairs. Passed as six loose arguments they were typed in every writer's constructor and in both
factories; here they are built once by the caller (the materialize pass, a push) and handed on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from feast_bc.naming import SOURCE_VERSION_FEATURE
from feast_bc.online_writers.encoding import EntityKeys


class StoreTarget(NamedTuple):
    """The online store a writer writes into, and how an entity of the family is keyed there."""

    repo_config: Any  # feast.repo_config.RepoConfig
    online_store: Any  # the provider's online store object (its connections)
    join_key: str
    id_dtype: str  # "int64" or "string"

    @property
    def store_config(self) -> Any:
        """The ``online_store`` block of ``feature_store.yaml``."""
        return self.repo_config.online_store

    def entity_keys(self) -> EntityKeys:
        """The encoder of this store's serialized entity keys."""
        return EntityKeys(self.join_key, self.id_dtype, self.repo_config.entity_key_serialization_version)


class ViewTarget(NamedTuple):
    """One feature view a writer fills, and the dimension of the vectors it holds (a tuple
    ``(feature_view, dim)`` is one)."""

    feature_view: Any  # feast.FeatureView
    dim: int

    @property
    def name(self) -> str:
        return self.feature_view.name

    @property
    def with_source(self) -> bool:
        """Whether the view declares the source-version feature (written beside the embedding)."""
        return SOURCE_VERSION_FEATURE in {f.name for f in self.feature_view.features}


def is_postgres(online_store: Any) -> bool:
    """Whether ``online_store`` is Feast's PostgreSQL store (or a subclass of it).

    Told by class name, not ``isinstance``: Feast's PostgreSQL module imports psycopg, which only
    a PostgreSQL profile needs installed (the writers, PinReader and PinSearch ask this one question).
    """
    return any(cls.__name__ == "PostgreSQLOnlineStore" for cls in type(online_store).__mro__)
