"""Issue 25, deliverable 3: drift since publish -- every publish keeps a reference sample of its own
values; `status` reports, per served version, how far what it serves now has moved from them; the
gate's `max_drift_since_publish` refuses a version that would move a pin too far in total, even
when every single step passes the per-step alignment limit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SyntheticFamily, run_cli
from feast_bc import Catalog, EntitySpec
from feast_bc.drift import DRIFT_THRESHOLD, REFERENCE_ROWS, drift_since_publish, read_reference, sample_rows
from feast_bc.errors import PublishRefusedError
from feast_bc.repo import init_repo
from feast_bc.status import repo_status

DIM = 12


def _publish_drifting(catalog, fam: SyntheticFamily, rng, step: float):
    """The next version: B = I (same dim) and z_{k+1} = z_k + noise, so each step moves every pin by ~step."""
    k = fam.latest
    z = fam.vectors[k] + step * rng.normal(size=fam.vectors[k].shape).astype(np.float32) * np.float32(
        np.linalg.norm(fam.vectors[k], axis=1).mean() / np.sqrt(DIM)
    )
    b = np.eye(DIM, dtype=np.float32)
    catalog.publish(
        fam.name, ids=fam.ids[k], vectors=z, transform=b, entity=EntitySpec(name="item", join_key="item_id")
    )
    fam.ids[k + 1], fam.vectors[k + 1], fam.transforms[k + 1] = fam.ids[k], z.astype(np.float32), b
    return z


def _numpy_drift(fam: SyntheticFamily, j: int) -> tuple[float, float]:
    """(mean L2 shift / mean L2 norm, share over the threshold) of version j's sample, by hand."""
    rows = sample_rows(fam.ids[j])
    then = fam.vectors[j][rows].astype(np.float64)
    k = fam.latest
    index = {int(i): r for r, i in enumerate(fam.ids[k])}
    now = fam.expected(j)[[index[int(i)] for i in fam.ids[j][rows]]]
    moved, scale = np.linalg.norm(now - then, axis=1), np.linalg.norm(then, axis=1)
    return float(moved.sum() / scale.sum()), float((moved / scale > DRIFT_THRESHOLD).mean())


def test_drift_figures_equal_numpy_and_status_shows_them(tmp_path):
    repo = init_repo(tmp_path / "repo")
    catalog = Catalog.for_repo(repo)
    fam = SyntheticFamily("item_embedding", "item", "item_id", [DIM] * 5)
    rng = np.random.default_rng(0)
    fam.publish_next(catalog, rng, n=3000)  # more ids than the sample keeps
    for _ in range(3):
        _publish_drifting(catalog, fam, rng, step=0.2)
    manifest = catalog.manifest(fam.name)
    rec0 = manifest.version(0)
    assert rec0.reference is not None and rec0.reference.rows == REFERENCE_ROWS
    ids, vectors = read_reference(catalog, fam.name, rec0, "item_id")
    np.testing.assert_array_equal(vectors, fam.vectors[0][sample_rows(fam.ids[0])])
    drifts = drift_since_publish(catalog, fam.name, manifest)
    assert drifts[3].mean_relative == pytest.approx(0.0, abs=1e-6)  # the latest serves its own values
    previous = 0.0
    for j in (2, 1, 0):
        want_mean, want_share = _numpy_drift(fam, j)
        assert drifts[j].mean_relative == pytest.approx(want_mean, rel=1e-5)
        assert drifts[j].share_over == pytest.approx(want_share)
        assert drifts[j].mean_relative > previous  # older pins have moved further
        previous = drifts[j].mean_relative
    report = repo_status(repo, feast=False)
    shown = {v.version: v.drift for v in report.families[0].versions}
    assert shown[0].mean_relative == pytest.approx(drifts[0].mean_relative)
    text = run_cli(["feast-bc", "status", "--repo", str(repo), "--no-feast"]).stdout
    assert f"v0: drift since publish {drifts[0].mean_relative:.4f}" in text, text
    assert catalog.verify(fam.name)  # the reference samples are checksummed artifacts like the others


def test_the_gate_refuses_a_version_that_moves_a_pin_too_far_in_total(tmp_path):
    """Each step passes a per-step alignment limit; the drift limit still stops the run of versions."""
    repo = init_repo(tmp_path / "repo")
    catalog = Catalog.for_repo(repo)
    fam = SyntheticFamily("item_embedding", "item", "item_id", [DIM] * 6)
    rng = np.random.default_rng(1)
    fam.publish_next(catalog, rng, n=200)
    proc = run_cli(
        ["feast-bc", "gate", "--repo", str(repo), "--max-alignment-error", "0.3", "--max-drift-since-publish", "0.3"]
    )
    assert json.loads(proc.stdout[proc.stdout.index("{") :])["max_drift_since_publish"] == 0.3
    _publish_drifting(catalog, fam, rng, step=0.25)  # v1: v0 moves ~0.25: passes both
    decision = catalog.manifest(fam.name).latest.gate
    assert decision.passed and any(c.limit_name == "max_drift_since_publish" for c in decision.checks)
    with pytest.raises(
        PublishRefusedError, match=r"drift since publish of v0 0\.3\d+ > max_drift_since_publish = 0\.3"
    ) as refused:
        _publish_drifting(catalog, fam, rng, step=0.25)  # one more step of ~0.25: v0 ~0.35 in total
    assert "alignment error" not in str(refused.value)  # the step itself was within the per-step limit
    assert catalog.manifest(fam.name).latest_version == 1  # nothing written
    # the measured drift of the refused proposal equals what the numpy chain gives
    manifest = catalog.manifest(fam.name)
    z = fam.vectors[1] * 2.0  # a version that doubles every vector: drift of v0 and v1 is exactly 1.0
    from feast_bc.transforms import LinearTransform

    got = drift_since_publish(
        catalog, fam.name, manifest, proposal=(fam.ids[1], z, LinearTransform(np.eye(DIM, dtype=np.float32)))
    )
    assert got[1].mean_relative == pytest.approx(1.0, rel=1e-5)
    want = (
        np.linalg.norm(2 * fam.vectors[1] - fam.vectors[0], axis=1).sum() / np.linalg.norm(fam.vectors[0], axis=1).sum()
    )
    assert got[0].mean_relative == pytest.approx(want, rel=1e-5)
