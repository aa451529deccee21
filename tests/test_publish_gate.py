"""The publish gate: declared limits refuse a version (catalog untouched), record passes and overrides."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from conftest import run_cli
from feast_bc import Catalog, EntitySpec
from feast_bc.errors import GateConfigError, PublishRefusedError
from feast_bc.manifest import FamilyManifest
from feast_bc.publish_gate import GATE_FILENAME, GateFile, read_gate_file
from feast_bc.status import repo_status
from feast_bc.status_render import render_status

ITEM = EntitySpec(name="item", join_key="item_id")
N = 300


def tree_digest(root) -> dict[str, str]:
    """Every file under ``root`` (hidden ones included) -> sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def declare(catalog: Catalog, **limits) -> None:
    catalog.root.mkdir(parents=True, exist_ok=True)
    (catalog.root / GATE_FILENAME).write_text(json.dumps(limits))


def next_version(rng, z_old: np.ndarray, dim: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(z_new, B) with B z_new = z_old + noise * (relative) perturbation: alignment error ~ noise."""
    b = rng.normal(size=(z_old.shape[1], dim))
    z_new = np.linalg.lstsq(b, (z_old + noise * rng.normal(size=z_old.shape) * np.abs(z_old).mean()).T, rcond=None)[0].T
    return z_new, b


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(b, axis=1).mean())


@pytest.fixture
def two_versions(tmp_path):
    """item_embedding at version 1 (dims 6 -> 10), no limits yet."""
    catalog = Catalog(tmp_path / "repo" / "bc_catalog")
    rng = np.random.default_rng(0)
    z0 = rng.normal(size=(N, 6))
    catalog.publish("item_embedding", ids=np.arange(N), vectors=z0, entity=ITEM)
    z1, b1 = next_version(rng, z0, 10, 0.01)
    catalog.publish("item_embedding", ids=np.arange(N), vectors=z1, transform=b1)
    return catalog, rng, z0, z1, b1


def test_refused_over_the_limit_and_the_catalog_is_unchanged(two_versions):
    catalog, rng, z0, z1, b1 = two_versions
    declare(catalog, max_alignment_error=0.2)
    z2, b2 = next_version(rng, z1, 14, 0.5)  # far off: consumers of v0 and v1 would see their vectors move
    want_v1 = relative_error(z2 @ b2.T, z1)
    before = tree_digest(catalog.root)
    with pytest.raises(PublishRefusedError) as refused:
        catalog.publish("item_embedding", ids=np.arange(N), vectors=z2, transform=b2, metrics={"val_recall@50": 0.3})
    message = str(refused.value)
    assert "version 2 refused by the publish gate" in message and "max_alignment_error = 0.2" in message
    assert f"alignment error to v1 {want_v1:.4g} >" in message  # the measured value, by the documented formula
    assert "alignment error to v0" in message and "force=True" in message
    assert tree_digest(catalog.root) == before  # no new artifact, manifest byte-identical
    assert catalog.manifest("item_embedding").latest_version == 1 and catalog.orphans("item_embedding") == []


def test_passes_under_the_limit_and_the_figures_are_recorded(two_versions):
    catalog, rng, z0, z1, b1 = two_versions
    declare(catalog, max_alignment_error=0.2, min_metrics={"val_recall@50": 0.1})
    z2, b2 = next_version(rng, z1, 14, 0.05)
    decision = catalog.check_publish(
        "item_embedding", ids=np.arange(N), vectors=z2, transform=b2, metrics={"val_recall@50": 0.3}
    )
    rec = catalog.publish("item_embedding", ids=np.arange(N), vectors=z2, transform=b2, metrics={"val_recall@50": 0.3})
    gate = catalog.manifest("item_embedding").latest.gate  # read back from disk, seal checked
    assert gate == rec.gate and gate.checks == decision.checks and gate.passed and not gate.forced
    by_name = {c.name: c for c in gate.checks}
    assert set(by_name) == {"alignment error to v0", "alignment error to v1", "val_recall@50"}
    assert by_name["alignment error to v1"].measured == pytest.approx(relative_error(z2 @ b2.T, z1), rel=1e-5)
    b01 = b1.astype(np.float32).astype(np.float64)
    want_v0 = relative_error(z2 @ b2.T @ b01.T, z1 @ b01.T)
    assert by_name["alignment error to v0"].measured == pytest.approx(want_v0, rel=1e-4)
    assert by_name["val_recall@50"].measured == 0.3 and by_name["val_recall@50"].limit == 0.1
    assert gate.limits_sha256 == read_gate_file(catalog.root)[1]


def test_forced_publish_is_recorded_as_forced(two_versions):
    catalog, rng, z0, z1, b1 = two_versions
    declare(catalog, max_alignment_error=0.2)
    z2, b2 = next_version(rng, z1, 14, 0.5)
    rec = catalog.publish("item_embedding", ids=np.arange(N), vectors=z2, transform=b2, force=True)
    gate = catalog.manifest("item_embedding").version(2).gate
    assert rec.version == 2 and gate.forced and not gate.passed
    assert {c.name for c in gate.failed} == {"alignment error to v0", "alignment error to v1"}
    assert all(c.measured > 0.2 for c in gate.failed)


def test_metric_limits_and_version_zero(tmp_path):
    catalog = Catalog(tmp_path / "bc_catalog")
    declare(catalog, max_alignment_error=0.0, min_metrics={"val_recall@50": 0.1}, max_metrics={"train_seconds": 60})
    z0 = np.random.default_rng(1).normal(size=(50, 4))
    with pytest.raises(PublishRefusedError, match=r"val_recall@50 0\.05 < min_metrics\['val_recall@50'\] = 0\.1"):
        catalog.publish(
            "item_embedding",
            ids=np.arange(50),
            vectors=z0,
            entity=ITEM,
            metrics={"val_recall@50": 0.05, "train_seconds": 1},
        )
    assert not (catalog.root / "item_embedding").exists()  # a refused first publish leaves no family behind
    with pytest.raises(PublishRefusedError, match="train_seconds not measured > .*not reported"):
        catalog.publish("item_embedding", ids=np.arange(50), vectors=z0, entity=ITEM, metrics={"val_recall@50": 0.5})
    rec = catalog.publish(
        "item_embedding", ids=np.arange(50), vectors=z0, entity=ITEM, metrics={"val_recall@50": 0.5, "train_seconds": 1}
    )
    assert rec.gate.passed and [c.name for c in rec.gate.checks] == ["val_recall@50", "train_seconds"]  # no v<0


def test_per_version_override_and_family_sections(two_versions):
    catalog, rng, z0, z1, b1 = two_versions
    z2, b2 = next_version(rng, z1, 14, 0.5)
    args = {"ids": np.arange(N), "vectors": z2, "transform": b2}
    declare(catalog, max_alignment_error=0.2, max_alignment_error_per_version={"0": 5.0})
    with pytest.raises(PublishRefusedError) as refused:
        catalog.publish("item_embedding", **args)
    assert "alignment error to v1" in str(refused.value) and "to v0" not in str(refused.value)
    declare(catalog, max_alignment_error=0.2, families={"item_embedding": {"max_alignment_error": 5.0}})
    gate = catalog.check_publish("item_embedding", **args)
    assert gate.passed and gate.limits.max_alignment_error == 5.0
    catalog.retire("item_embedding", 0)  # a retired version is no one's concern any more
    declare(catalog, max_alignment_error_per_version={"0": 0.01, "1": 5.0})
    rec = catalog.publish("item_embedding", **args)
    assert [c.name for c in rec.gate.checks] == ["alignment error to v1"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is not valid JSON"),
        ('{"max_alignment_eror": 0.3}', "max_alignment_eror: Extra inputs are not permitted"),
        ('{"max_alignment_error": -1}', "max_alignment_error: Input should be greater than or equal to 0"),
        ('{"min_metrics": {"val_recall@50": "high"}}', "min_metrics.val_recall@50"),
        ('{"families": {"Bad Name!": {}}}', "families"),
    ],
)
def test_a_bad_limits_file_is_refused_naming_the_file_and_the_problem(two_versions, content, problem):
    catalog, rng, z0, z1, b1 = two_versions
    (catalog.root / GATE_FILENAME).write_text(content)
    before = tree_digest(catalog.root)
    z2, b2 = next_version(rng, z1, 14, 0.01)
    with pytest.raises(GateConfigError) as bad:
        catalog.publish("item_embedding", ids=np.arange(N), vectors=z2, transform=b2)
    assert str(catalog.root / GATE_FILENAME) in str(bad.value) and problem in str(bad.value)
    assert tree_digest(catalog.root) == before
    report = repo_status(catalog.root.parent, feast=False)
    assert not report.ok and any(problem in p for p in report.problems)


def test_status_and_the_gate_command_show_the_decision(two_versions):
    catalog, rng, z0, z1, b1 = two_versions
    repo = catalog.root.parent
    set_gate = run_cli(
        ["feast-bc", "gate", "--repo", str(repo), "--max-alignment-error", "0.2", "--min-metric", "val_recall@50=0.1"]
    )
    assert "wrote" in set_gate.stdout
    assert read_gate_file(catalog.root)[0] == GateFile(max_alignment_error=0.2, min_metrics={"val_recall@50": 0.1})
    z2, b2 = next_version(rng, z1, 14, 0.5)
    catalog.publish(
        "item_embedding", ids=np.arange(N), vectors=z2, transform=b2, metrics={"val_recall@50": 0.3}, force=True
    )
    text = render_status(repo_status(repo, feast=False))
    assert "publish gate: " in text and '"max_alignment_error": 0.2' in text
    assert "publish gate FORCED past: alignment error to v0" in text
    proc = run_cli(["feast-bc", "status", "--repo", str(repo), "--no-feast", "--json"])
    versions = json.loads(proc.stdout)["families"][0]["versions"]
    assert versions[1]["gate"] is None and versions[2]["gate"]["forced"] is True
    assert run_cli(["feast-bc", "gate", "--repo", str(repo), "--clear"]).returncode == 0
    assert read_gate_file(catalog.root) is None


def test_manifest_round_trip_with_a_gate_and_an_old_manifest_without_one(two_versions):
    catalog, rng, z0, z1, b1 = two_versions
    path = catalog.root / "item_embedding" / "manifest.json"
    old = path.read_bytes()  # written with no limits declared: no "gate" key at all
    assert b'"gate"' not in old
    assert FamilyManifest.from_json_bytes(old).to_json_bytes() == old  # checksum stable for old manifests
    declare(catalog, max_alignment_error=1.0)
    z2, b2 = next_version(rng, z1, 14, 0.01)
    catalog.publish("item_embedding", ids=np.arange(N), vectors=z2, transform=b2)
    data = path.read_bytes()
    manifest = FamilyManifest.from_json_bytes(data)
    assert manifest.to_json_bytes() == data and manifest.latest.gate.passed
    assert manifest.versions[1].gate is None
    raw = json.loads(data)
    raw["versions"][2]["gate"]["passed"] = False  # an edited decision breaks the seal
    with pytest.raises(Exception, match="fails its checksum"):
        FamilyManifest.from_json_bytes(json.dumps(raw).encode())


def test_publish_output_refuses_both_families_before_writing_either(tmp_path):
    from training.chain import VersionOutput
    from training.data.splits import VersionSplit
    from training.models.factory import ModelSpec
    from training.publish import ITEM_FAMILY, USER_FAMILY, publish_output
    from training.record import TrainedVersion

    rng = np.random.default_rng(3)
    users, items = rng.normal(size=(40, 6)), rng.normal(size=(30, 6))
    z_users, b = next_version(rng, users, 8, 0.01)  # users stay aligned ...
    z_items = np.linalg.lstsq(b, (items + rng.normal(size=items.shape)).T, rcond=None)[0].T  # ... items do not

    def output(version, u, i, transform):
        empty = np.zeros(0, dtype=np.int64)
        split = VersionSplit(version, 0.5, 0.6, 40, 30, 40, 30, empty, empty, empty, empty, empty, empty)
        record = TrainedVersion(
            version=version,
            time_train=0.5,
            time_next=0.6,
            num_users=40,
            num_items=30,
            model=ModelSpec(kind="mf", dim=u.shape[1], num_layers=0),
            val_recall={50: 0.2},
            selected_epoch=1,
            epochs_run=1,
            train_seconds=1.0,
            total_seconds=1.0,
        )
        return VersionOutput(
            record,
            "test",
            split,
            np.arange(40),
            np.arange(30),
            u.astype(np.float32),
            i.astype(np.float32),
            transform,
            u,
            i,
        )

    repo = tmp_path / "repo"
    publish_output(output(0, users, items, None), repo, apply=False)
    catalog = Catalog.for_repo(repo)
    declare(catalog, max_alignment_error=0.2)
    before = tree_digest(catalog.root)
    v1 = output(1, z_users, z_items, b.astype(np.float32))
    with pytest.raises(PublishRefusedError, match="no family written: item_embedding: alignment error to v0"):
        publish_output(v1, repo, apply=False)
    assert tree_digest(catalog.root) == before  # users were fine, but not published alone either
    result = publish_output(v1, repo, apply=False, force=True)
    assert result.published == [USER_FAMILY, ITEM_FAMILY]
    assert catalog.manifest(USER_FAMILY).latest.gate.passed
    items_gate = catalog.manifest(ITEM_FAMILY).latest.gate
    assert items_gate.forced and items_gate.failed[0].limit == 0.2
    again = publish_output(v1, repo, apply=False)  # a retry: both already there, the gate is not asked again
    assert again.published == [] and again.skipped == [USER_FAMILY, ITEM_FAMILY]


def test_one_publish_validates_and_judges_each_family_once_reading_its_latest_once(tmp_path, monkeypatch):
    """Catalog.publish_all (what training's publishes call): two families, alignment limits set --
    each family's current latest file is read once (it was read up to three times: the check, then
    the publish's dropped-id check and its gate), the gate judges each family once, and an invalid
    second family leaves the first unpublished even when forced."""
    import pyarrow.parquet as pq

    from feast_bc import NonFiniteError, PublishRequest
    from feast_bc.catalog.reader import CatalogReader

    catalog = Catalog(tmp_path / "repo" / "bc_catalog")
    rng = np.random.default_rng(5)
    user = EntitySpec(name="user", join_key="user_id")
    z0 = {"item_embedding": rng.normal(size=(N, 6)), "user_embedding": rng.normal(size=(N, 6))}
    for family, entity in (("item_embedding", ITEM), ("user_embedding", user)):
        catalog.publish(family, ids=np.arange(N), vectors=z0[family], entity=entity)
    declare(catalog, max_alignment_error=0.5)
    b = rng.normal(size=(6, 8))
    z1 = {f: np.linalg.lstsq(b, z.T, rcond=None)[0].T for f, z in z0.items()}

    reads, judged = [], []  # (what, family) per read of a family's current latest file
    real_latest, real_read_table = CatalogReader.latest_embeddings, pq.read_table
    monkeypatch.setattr(
        CatalogReader,
        "latest_embeddings",
        lambda self, family, *a, **k: reads.append(("verified", family)) or real_latest(self, family, *a, **k),
    )

    def read_table(source, *a, **k):
        if "embeddings" in str(source):
            reads.append(("parquet", "item_embedding" if "item_embedding" in str(source) else "user_embedding"))
        return real_read_table(source, *a, **k)

    monkeypatch.setattr(pq, "read_table", read_table)
    import feast_bc.publish_gate as publish_gate

    real_evaluate = publish_gate.evaluate
    monkeypatch.setattr(
        publish_gate,
        "evaluate",
        lambda gate, family, *a, **k: judged.append(family) or real_evaluate(gate, family, *a, **k),
    )

    bad = z1["user_embedding"].copy()
    bad[3, 2] = np.nan
    requests = [
        PublishRequest("item_embedding", np.arange(N), z1["item_embedding"], b, expected_version=1),
        PublishRequest("user_embedding", np.arange(N), bad, b, expected_version=1),
    ]
    before = tree_digest(catalog.root)
    with pytest.raises(NonFiniteError):
        catalog.publish_all(requests, force=True)
    assert tree_digest(catalog.root) == before  # the valid item family was not written either

    reads.clear(), judged.clear()
    requests[1] = requests[1]._replace(vectors=z1["user_embedding"])
    records = catalog.publish_all(requests)
    assert [r.version for r in records] == [1, 1]
    # each latest file read once (the verified read the gate and the dropped-id check share)
    assert sorted(reads) == [
        ("parquet", "item_embedding"),
        ("parquet", "user_embedding"),
        ("verified", "item_embedding"),
        ("verified", "user_embedding"),
    ]
    assert judged == ["item_embedding", "user_embedding"]
    assert all(catalog.manifest(f).latest.gate.passed for f in z0)
