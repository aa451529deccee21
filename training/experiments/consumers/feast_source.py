"""Reading ver-0 embeddings the way a real consumer does: through Feast's pinned FeatureServices.

Why: the reproduction must measure what a consumer team actually receives, not only the offline
matrix product. For every version k of a chain this module publishes the version into a feast_bc
feature repo (:func:`training.publish.publish_output`, which applies the repo to Feast), runs
``store.materialize`` into the repo's online store (SQLite), and then reads every user's and
item's embedding from ``user_embedding_v0`` / ``item_embedding_v0`` with
``get_online_features`` -- B_1∘…∘B_k(z_k) computed by feast_bc's materialization. The values read
are compared with the offline ``VersionOutput.user_ver0`` / ``item_ver0`` (max absolute difference
within ``tolerance``) and are the embeddings the consumers are evaluated on.

Feast is imported here only when a version is fetched.
"""

from __future__ import annotations

import contextlib
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from training.chain import VersionOutput
from training.errors import TrainingError
from training.publish import ITEM_FAMILY, USER_FAMILY, publish_output

#: Materialization window start: before any publish (event timestamps are publish times).
MATERIALIZE_FROM = datetime(2000, 1, 1, tzinfo=UTC)


class FeastReadError(TrainingError):
    """Feast served no value for an entity that the version embeds."""


class FeastCheck(BaseModel):
    """Feast-served version-0 embeddings of one version vs the offline computation."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    strategy: str
    version: int
    users: int
    items: int
    max_abs_diff_user: float
    max_abs_diff_item: float
    tolerance: float
    passed: bool
    publish_seconds: float
    materialize_seconds: float
    read_seconds: float


class FeastVer0Source:
    """One strategy's chain as its consumers see it: publish each version, materialize, read v0."""

    def __init__(self, repo: str | Path, project: str, *, tolerance: float = 1e-5):
        self.repo = Path(repo).absolute()
        self.project = project
        self.tolerance = tolerance

    def fetch(self, output: VersionOutput) -> tuple[np.ndarray, np.ndarray, FeastCheck]:
        """Publish ``output`` (the chain's next version), materialize, and read every object's ver-0
        embedding back through Feast. Returns (users, items, check); rows follow ``output.user_ids``."""
        from feast import FeatureStore

        started = time.perf_counter()
        publish_output(output, self.repo, project=self.project, apply=True)
        published = time.perf_counter()
        store = FeatureStore(repo_path=str(self.repo))
        with contextlib.redirect_stdout(io.StringIO()):  # Feast prints a line per view; keep progress bars readable
            store.materialize(MATERIALIZE_FROM, datetime.now(UTC) + timedelta(seconds=5))
        materialized = time.perf_counter()
        users = _read(store, USER_FAMILY, "user_id", output.user_ids)
        items = _read(store, ITEM_FAMILY, "item_id", output.item_ids)
        done = time.perf_counter()
        diff_user = _max_abs_diff(users, output.user_ver0)
        diff_item = _max_abs_diff(items, output.item_ver0)
        check = FeastCheck(
            strategy=output.strategy,
            version=output.version,
            users=len(users),
            items=len(items),
            max_abs_diff_user=diff_user,
            max_abs_diff_item=diff_item,
            tolerance=self.tolerance,
            passed=max(diff_user, diff_item) <= self.tolerance,
            publish_seconds=round(published - started, 3),
            materialize_seconds=round(materialized - published, 3),
            read_seconds=round(done - materialized, 3),
        )
        return users, items, check


def _read(store, family: str, join_key: str, ids: np.ndarray) -> np.ndarray:
    """Every id's vector from the pinned version-0 FeatureService ``<family>_v0``."""
    rows = [{join_key: int(i) if ids.dtype.kind == "i" else str(i)} for i in ids]
    response = store.get_online_features(features=store.get_feature_service(f"{family}_v0"), entity_rows=rows)
    values = response.to_dict()["embedding"]
    missing = [str(ids[r]) for r, v in enumerate(values) if v is None]
    if missing:
        raise FeastReadError(
            f"Feast served no {family}_v0 value for {len(missing)} of {len(ids)} ids (e.g. {missing[0]}); "
            "was the version materialized?"
        )
    return np.asarray(values, dtype=np.float32)


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
