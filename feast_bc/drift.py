"""Drift since publish: how far what a pinned version serves has moved from what it served when it
was published.

The publish gate bounds each *step* (the alignment error of a new version to what every pin serves
today), so a run of versions that each pass a limit can move a pin arbitrarily far in total. What a
consumer cares about is the distance from the values its model was trained on. So every publish
keeps a fixed reference sample of the new version's own values (up to :data:`REFERENCE_ROWS` ids,
spread evenly over the sorted ids, as a checksummed parquet artifact named in the manifest); since a
later version must carry every id of the previous one, those ids stay servable, and version j's
drift is

    sum over the sample of ||v_j(now) - v_j(at publish)|| / sum of ||v_j(at publish)||

(mean L2 shift / mean L2 norm: the gate's alignment measure, here against the publish-time values)
with v_j(now) = B_{j+1}...B_k(z_k) of the sample ids, plus the share of sampled entities whose own
relative change exceeds :data:`DRIFT_THRESHOLD`. ``feast-bc status`` reports it per served version;
the gate's ``max_drift_since_publish`` limit judges a new version by the drift it *would* cause.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from feast_bc.artifacts import verify_file
from feast_bc.manifest import FamilyManifest, VersionRecord
from feast_bc.naming import EMBEDDING_FEATURE

REFERENCE_ROWS = 2048  # sampled ids per version: the mean's standard error is ~2% of its spread
DRIFT_THRESHOLD = 0.1  # an entity "drifted" when its own relative change exceeds this


class Drift(BaseModel):
    """The drift of one served version since its publish."""

    version: int
    mean_relative: float = Field(description="mean ||now - then|| / mean ||then|| over the sample")
    share_over: float = Field(description=f"share of sampled entities whose relative change > {DRIFT_THRESHOLD}")
    threshold: float = DRIFT_THRESHOLD
    sample: int = Field(description="entities in the reference sample")

    def describe(self) -> str:
        return (
            f"v{self.version}: drift since publish {self.mean_relative:.4f} (mean L2 shift / mean L2 norm, {self.sample} ids; "
            f"{self.share_over:.0%} over {self.threshold:g})"
        )


def sample_rows(ids: np.ndarray) -> np.ndarray:
    """Row indices of the reference sample: up to REFERENCE_ROWS, evenly spread over the sorted ids."""
    order = np.argsort(ids, kind="stable")
    if len(order) <= REFERENCE_ROWS:
        return order
    return order[np.linspace(0, len(order) - 1, REFERENCE_ROWS).round().astype(np.int64)]


def read_reference(catalog, family: str, rec: VersionRecord, join_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a version's reference sample, verified against the manifest first."""
    path = catalog.artifact_path(family, rec.reference)
    verify_file(path, rec.reference, origin=f"family {family!r}, reference sample of version {rec.version}")
    table = pq.read_table(path)
    vectors = np.stack(table.column(EMBEDDING_FEATURE).to_numpy(zero_copy_only=False)).astype(np.float64)
    return table.column(join_key).to_numpy(zero_copy_only=False), vectors


def drift_since_publish(catalog, family: str, manifest: FamilyManifest, *, proposal=None) -> dict[int, Drift | None]:
    """Served version -> its drift (None: published without a reference sample).

    Today's values come from the latest through the composed chain; with ``proposal`` = (ids,
    vectors, B) of a version about to be published, the values that version would serve instead."""
    join_key = manifest.entity.join_key
    if proposal is None:
        ids, latest = catalog.latest_embeddings(family, manifest=manifest)
        step = None
    else:
        ids, latest, step = proposal  # B_{k+1} takes the proposed vectors to version k's space
    k = manifest.latest_version
    index = {key: row for row, key in enumerate(ids.tolist())}
    out: dict[int, Drift | None] = {}
    for j in manifest.served_versions:
        rec = manifest.version(j)
        if rec.reference is None:
            out[j] = None
            continue
        ref_ids, then = read_reference(catalog, family, rec, join_key)
        rows = np.array([index[key] for key in ref_ids.tolist()], dtype=np.int64)
        now = np.asarray(latest[rows], dtype=np.float32)
        if step is not None:
            now = step.transform(now)
        if j < k:
            now = catalog.composed(family, k, j, manifest).transform(now)
        now = now.astype(np.float64)
        scale = np.linalg.norm(then, axis=1)
        moved = np.linalg.norm(now - then, axis=1)
        relative = np.divide(moved, scale, out=np.zeros_like(moved), where=scale > 0)
        out[j] = Drift(
            version=j,
            mean_relative=float(moved.sum() / scale.sum()) if scale.sum() > 0 else 0.0,
            share_over=float((relative > DRIFT_THRESHOLD).mean()),
            sample=len(rows),
        )
    return out
