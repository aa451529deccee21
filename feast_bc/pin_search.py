"""Nearest neighbours in a pinned version's space, for consumers that opt in (numpy only, no torch).

On a profile with ``vector_enabled: true`` (PostgreSQL + pgvector) every feast_bc view declares its
``embedding`` field as Feast's vector field (``vector_index``, ``vector_length`` = the version's
dimension), so ``store.retrieve_online_documents_v2(features=["<family>_bc<j>:embedding"],
query=q, top_k=k, distance_metric=...)`` searches every pinned version -- items that appeared after
version j included, since materialize and push write their version-j values. With only Feast
installed that call is the whole consumer side. Two things of Feast 0.67 make this module worth
having:

* **PostgreSQL + pgvector** answers the right ids in distance order, but its ``OnlineResponse``
  places the other columns (``distance``, ``embedding``) in *entity-id* order
  (``feast.utils._get_unique_entities_from_values`` sorts the documents by key before filling them
  in), so a consumer reading ``to_dict()`` pairs id i with another entity's distance and vector.
  :class:`PinSearch` calls the online store's own ``retrieve_online_documents_v2`` (documents
  nearest first, each with its own vector) and computes the distances in float64.
* **SQLite** (the embedded default): Feast's vector search there (read in its source, not run:
  this machine's Python cannot load extensions) loads sqlite-vec only on Python 3.10, inserts every
  row into one ``vec_table`` shared by all views on every query and answers only the non-vector
  features -- a feast_bc view has none. :class:`PinSearch` scans the pin's table exactly instead:
  all vectors decoded once with numpy, cached until the database changes, top-k by the requested
  metric. No ``vector_enabled`` needed.

Redis has no vector search in Feast 0.67; :class:`PinSearch` refuses it and names the stores that
have one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from feast_bc.errors import InvalidInputError
from feast_bc.naming import EMBEDDING_FEATURE
from feast_bc.pin_reader import PinReader, _vector

logger = logging.getLogger(__name__)

#: Metrics of Feast's PostgreSQL store that every pgvector release has (its ``L1`` needs pgvector
#: 0.7, newer than the one ``pgserver`` bundles), smaller = nearer.
Metric = Literal["L2", "cosine", "inner_product"]
METRICS: tuple[str, ...] = ("L2", "cosine", "inner_product")


class SearchHits(BaseModel):
    """The top-k entities of one query, nearest first: ids, distances (pgvector's definitions:
    the L2 norm, ``1 - cos``, ``-<q, v>``) and the pinned vectors."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    ids: list
    distances: np.ndarray
    vectors: np.ndarray


def distances(matrix: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Distance of each row of ``matrix`` to ``query`` under ``metric`` (float64)."""
    m, q = np.asarray(matrix, dtype=np.float64), np.asarray(query, dtype=np.float64)
    if metric == "L2":
        return np.linalg.norm(m - q, axis=1)
    if metric == "inner_product":
        return -(m @ q)
    norms = np.linalg.norm(m, axis=1) * np.linalg.norm(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > 0, 1.0 - (m @ q) / norms, np.nan)


def nearest_rows(matrix: np.ndarray, norms: np.ndarray, query: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Rows of the ``k`` nearest vectors, nearest first (ties by row): exactly what float64
    :func:`distances` over every row gives, at the cost of one float32 matrix-vector product.

    The float32 products rank every row; each differs from the float64 one by at most
    ``dim * 2**-23 * |row| * |query|`` per row (a loose form of the dot-product error bound), so
    every row whose float32 distance could still beat the k-th is re-scored in float64, and the
    top k are taken from those."""
    n, dim = matrix.shape
    k = min(k, n)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    q_norm = float(np.linalg.norm(query))
    dots = (matrix @ query.astype(np.float32)).astype(np.float64)
    err = 4.0 * dim * 2.0**-23 * norms * q_norm + 1e-12
    if metric == "L2":  # the squared distance: same order
        approx, err = norms**2 - 2.0 * dots + q_norm**2, 2.0 * err
    elif metric == "inner_product":
        approx = -dots
    else:
        scale = np.where(norms > 0, norms * q_norm, np.inf)
        approx, err = np.where(norms > 0, 1.0 - dots / scale, np.inf), err / scale
    kth = np.partition(approx, k - 1)[k - 1]
    candidates = np.flatnonzero(approx - err <= kth + err.max())
    exact = distances(matrix[candidates], query, metric)
    exact = np.where(np.isnan(exact), np.inf, exact)
    return candidates[np.lexsort((candidates, exact))[:k]]


class PinSearch:
    """Top-k search in one pinned FeatureService's version space (see the module docstring).

    Resolved once when built, like :class:`~feast_bc.pin_reader.PinReader`; build a new one after
    `feast apply` registers another latest."""

    def __init__(self, repo: str | Path, service: str, *, fs_yaml_file: str | Path | None = None, store=None):
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        from feast_bc.online_writers.target import is_postgres

        self.reader = PinReader(repo, service, fs_yaml_file=fs_yaml_file, store=store)
        self.store, self.view = self.reader.store, self.reader.view
        field = next(f for f in self.view.features if f.name == EMBEDDING_FEATURE)
        declared = int(getattr(field, "vector_length", 0) or 0) if getattr(field, "vector_index", False) else 0
        online = self.online = self.store._get_provider().online_store
        if isinstance(online, SqliteOnlineStore):  # the stored vectors say their dimension
            self._search, self._dim = self._sqlite_scan(online, declared)
        elif is_postgres(online):
            if not getattr(self.store.config.online_store, "vector_enabled", False) or not declared:
                raise InvalidInputError(
                    f"{service}: the PostgreSQL profile has no pgvector column; set vector_enabled: true under "
                    "online_store, CREATE EXTENSION vector in the database, then `feast apply` and `feast materialize`"
                )
            self._search, self._dim = self._feast_search, lambda: declared
        else:
            raise InvalidInputError(
                f"{service}: the {type(online).__name__} online store has no vector search in Feast 0.67; search a PostgreSQL "
                "(pgvector) or SQLite profile of the repo"
            )

    def search(self, query, *, top_k: int = 10, distance_metric: Metric = "L2") -> SearchHits:
        """The ``top_k`` entities nearest to ``query`` (a vector of this version's dimension)."""
        q = np.asarray(query, dtype=np.float64)
        dim = self._dim()  # None: nothing stored yet to tell (an empty SQLite pin), any vector finds nothing
        if q.ndim != 1 or (dim is not None and q.shape != (dim,)) or not np.isfinite(q).all():
            raise InvalidInputError(
                f"the query must be {dim or 'a vector of'} finite numbers (version space of {self.view.name}); "
                f"got shape {q.shape}"
            )
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
            raise InvalidInputError(f"top_k must be a positive integer; got {top_k!r}")
        if distance_metric not in METRICS:
            raise InvalidInputError(f"distance_metric must be one of {', '.join(METRICS)}; got {distance_metric!r}")
        return self._search(q, int(top_k), distance_metric)

    # ------------------------------------------------------------------------------ stores
    def _feast_search(self, q: np.ndarray, top_k: int, metric: str) -> SearchHits:
        # The store's own search (what FeatureStore.retrieve_online_documents_v2 calls): documents
        # nearest first, each with its own values -- before Feast's response assembly reorders the
        # columns (module docstring).
        documents = self.online.retrieve_online_documents_v2(
            config=self.store.config,
            table=self.view,
            requested_features=[EMBEDDING_FEATURE],
            embedding=q.tolist(),
            top_k=top_k,
            distance_metric=metric,
        )
        ids, vectors = [], []
        for _, entity_key, values in documents:
            value = entity_key.entity_values[0]
            ids.append(value.int64_val if self.reader.int_ids else value.string_val)
            vectors.append(np.asarray(values[EMBEDDING_FEATURE].float_list_val.val, dtype=np.float32))
        matrix = np.stack(vectors) if vectors else np.empty((0, len(q)), dtype=np.float32)
        return SearchHits(ids=ids, distances=distances(matrix, q, metric), vectors=matrix)

    def _sqlite_scan(self, online, declared: int):
        from feast.infra.online_stores.sqlite import _quote_id, _table_id

        config = self.store.config
        versioning = getattr(config.registry, "enable_online_feature_view_versioning", False)
        table = _quote_id(_table_id(config.project, self.view, versioning))
        conn = online._get_conn(config)
        cache: dict = {}

        def load() -> tuple[list, np.ndarray]:
            # data_version moves when another connection commits; total_changes when this one writes
            stamp = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
            if cache.get("stamp") != stamp:
                rows = conn.execute(
                    f"SELECT entity_key, value FROM {table} WHERE feature_name = ?", (EMBEDDING_FEATURE,)
                ).fetchall()
                ids = _decode_ids([key for key, _ in rows], self.reader, config)
                matrix = _decode_vectors([value for _, value in rows], declared)
                norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))
                cache.update(stamp=stamp, ids=ids, matrix=matrix, norms=norms)
            return cache["ids"], cache["matrix"], cache["norms"]

        def dim() -> int | None:
            matrix = load()[1]
            return matrix.shape[1] if len(matrix) else (declared or None)

        def search(q: np.ndarray, top_k: int, metric: str) -> SearchHits:
            ids, matrix, norms = load()
            if not len(ids):
                return SearchHits(ids=[], distances=np.empty(0), vectors=np.empty((0, len(q)), dtype=np.float32))
            rows = nearest_rows(matrix, norms, q, top_k, metric)
            return SearchHits(
                ids=[ids[i] for i in rows], distances=distances(matrix[rows], q, metric), vectors=matrix[rows]
            )

        return search, dim


def _decode_ids(keys: list[bytes], reader: PinReader, config) -> list:
    """Entity ids of Feast's serialized keys: an int64 key is a constant prefix and its 8 bytes."""
    prefix = reader._keys(config).int_prefix
    if prefix is not None and all(len(k) == len(prefix) + 8 and k.startswith(prefix) for k in keys):
        return np.frombuffer(b"".join(k[-8:] for k in keys), dtype="<i8").tolist()
    from feast.infra.key_encoding_utils import deserialize_entity_key

    values = [deserialize_entity_key(k, config.entity_key_serialization_version).entity_values[0] for k in keys]
    return [v.int64_val if reader.int_ids else v.string_val for v in values]


def _decode_vectors(values: list[bytes], dim: int = 0) -> np.ndarray:
    """One float32 matrix of serialized ``Value(float_list_val=...)``s, all of one dimension (``dim``,
    or that of the first value when 0)."""
    from feast_bc.online_writers.encoding import vector_prefix

    if not values:
        return np.empty((0, dim), dtype=np.float32)
    dim = dim or len(_vector(values[0]))
    prefix = vector_prefix(dim)
    width = len(prefix) + 4 * dim
    if all(len(v) == width and v.startswith(prefix) for v in values):
        raw = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), width)
        return np.ascontiguousarray(raw[:, len(prefix) :]).view("<f4")
    vectors = [_vector(v) for v in values]
    if any(v is None or len(v) != dim for v in vectors):
        raise InvalidInputError(
            f"the pin's table holds vectors of several dimensions (expected {dim}); re-materialize it"
        )
    return np.stack(vectors).astype(np.float32)
