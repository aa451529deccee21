"""`feast-bc status` on a fresh, a populated, a lagging and a corrupted repo."""

import json
from datetime import UTC, datetime, timedelta

from conftest import publish_users_and_items, run_cli, unique_project
from feast_bc import Catalog
from feast_bc.repo import apply, init_repo
from feast_bc.status import repo_status
from feast_bc.status_render import render_status


def test_fresh_repo(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("st"))
    report = repo_status(repo, feast=False)
    assert report.ok and report.families == []
    assert "no embedding families published yet" in render_status(report)


def test_missing_repo_is_reported(tmp_path):
    report = repo_status(tmp_path / "nope")
    assert not report.ok and "does not exist" in report.problems[0]


def test_populated_then_lagging_then_corrupted(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("st"))
    catalog = Catalog.for_repo(repo)
    publish_users_and_items(catalog, versions=2)
    store = apply(repo)

    report = repo_status(repo)  # applied, not materialized yet
    assert not report.ok and any("never materialized" in p for f in report.families for p in f.problems)

    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    proc = run_cli(["feast-bc", "status", "--repo", str(repo), "--json"])
    data = json.loads(proc.stdout)
    items = next(f for f in data["families"] if f["family"] == "item_embedding")
    assert items["latest"] == 1 and items["registry_latest"] == 1 and items["problems"] == []
    assert [v["dim"] for v in items["versions"]] == [6, 10]
    assert items["versions"][1]["transform_sha256"] == catalog.manifest("item_embedding").latest.transform.sha256
    assert all(v["materialized_intervals"] for v in items["versions"])
    assert items["versions"][1]["metrics"] == {"val_recall@50": 0.11}

    import numpy as np

    catalog.publish(
        "item_embedding",
        ids=np.arange(40) * 7 + 3,  # the ids of version 1 (publish_users_and_items)
        vectors=np.ones((40, 4)),
        transform=np.ones((10, 4)),
        expected_version=2,
    )
    report = repo_status(repo)
    assert any(
        "serves version 1 as latest but version 2 is published" in p for f in report.families for p in f.problems
    )

    manifest = catalog.family_dir("user_embedding") / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"dim": 8', '"dim": 9'))
    proc = run_cli(["feast-bc", "status", "--repo", str(repo)], check=False)
    assert proc.returncode == 2
    assert "fails its checksum" in proc.stdout and "NOT OK" in proc.stdout
