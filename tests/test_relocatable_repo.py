"""Issue 24, deliverable 1: a repo that moves (or is mounted elsewhere) applies, materializes and
serves without edits; nothing feast_bc registers with Feast names a local path; the catalog's
location is configuration declared once in the repo."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import assert_online_matches, publish_users_and_items, run_cli, unique_project
from feast_bc import Catalog
from feast_bc.errors import ConfigurationError
from feast_bc.naming import MANAGED_BY, TAG_MANAGED
from feast_bc.repo import apply, init_repo


def _end() -> str:
    return (datetime.now(UTC) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S")


def _store(repo):
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo))


def _registered_text_of_managed_objects(repo) -> str:
    """Every feast_bc object the registry holds, as protobuf text (Feast's own infra excluded)."""
    from feast.protos.feast.core.Registry_pb2 import Registry

    proto = Registry()
    proto.ParseFromString((repo / "data" / "registry.db").read_bytes())
    parts = []
    for obj in [*proto.feature_views, *proto.feature_services, *proto.entities]:
        if obj.spec.tags.get(TAG_MANAGED) == MANAGED_BY:
            parts.append(str(obj))
    for source in proto.data_sources:
        if source.tags.get(TAG_MANAGED) == MANAGED_BY:
            parts.append(str(source))
    assert parts
    return "\n".join(parts)


@pytest.mark.parametrize("engine", ["bc", "local"])
def test_a_moved_repo_materializes_and_serves_with_no_path_registered(tmp_path, engine):
    """The issue's reproduction: init a/repo, publish two versions, `feast apply`, `mv a/repo b`,
    `feast materialize` in b -- which failed with UnknownFamilyError naming the old path. With
    Feast's stock engine the view UDFs run, and find the repo from the FeatureStore on their stack
    even when the command runs elsewhere (`feast -c`)."""
    project = unique_project("mv")
    original = init_repo(tmp_path / "a" / "repo", project=project, engine=engine)
    fams = publish_users_and_items(Catalog.for_repo(original), versions=2)
    proc = run_cli(["feast", "apply"], cwd=original)
    assert str(tmp_path) not in proc.stdout  # the apply output names no local path
    registered = _registered_text_of_managed_objects(original)
    assert str(tmp_path) not in registered, [line for line in registered.splitlines() if str(tmp_path) in line]

    moved = tmp_path / "b"
    shutil.move(str(original), moved)
    assert not (tmp_path / "a" / "repo").exists()
    run_cli(["feast", "-c", str(moved), "materialize-incremental", _end()], cwd=tmp_path)
    assert_online_matches(_store(moved), fams)


def test_a_declared_catalog_location_is_read_everywhere_and_moves_with_the_repo(tmp_path):
    """`feast-bc init --catalog` writes the `feast_bc:` block; publishing, `feast apply`, the engine
    and `feast-bc status` all use that catalog; the repo moved with it still serves."""
    project = unique_project("loc")
    repo = tmp_path / "one" / "repo"
    run_cli(["feast-bc", "init", str(repo), "--project", project, "--catalog", "catalogs/main"])
    for yaml in repo.glob("feature_store*.yaml"):
        assert 'feast_bc:\n  catalog: "catalogs/main"' in yaml.read_text()
    catalog = Catalog.for_repo(repo)
    assert catalog.root == repo.absolute() / "catalogs" / "main"
    assert Catalog.locate(repo).root == catalog.root
    fams = publish_users_and_items(catalog, versions=2)
    assert not (repo / "bc_catalog").exists()
    apply(repo)
    _store(repo).materialize_incremental(datetime.now(UTC) + timedelta(seconds=5))
    assert_online_matches(_store(repo), fams)
    status = run_cli(["feast-bc", "status", "--repo", str(repo)])
    assert "catalogs/main" in status.stdout, status.stdout

    moved = tmp_path / "two"
    shutil.move(str(tmp_path / "one"), moved)
    moved_repo = moved / "repo"
    rng = np.random.default_rng(3)
    for fam in fams.values():  # a new version published in the moved repo
        fam.publish_next(Catalog.for_repo(moved_repo), rng)
    run_cli(["feast", "apply"], cwd=moved_repo)
    run_cli(["feast", "materialize-incremental", _end()], cwd=moved_repo)
    assert_online_matches(_store(moved_repo), fams)


def test_bad_catalog_settings_are_refused_in_one_line(tmp_path):
    """A URI the filesystem layer does not read, profiles that disagree, an unknown key: one line
    naming the file and the fix; `feast-bc init` writes nothing."""
    proc = run_cli(["feast-bc", "init", str(tmp_path / "r"), "--catalog", "gs://bucket/prefix"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "not gs://" in proc.stderr and "--catalog" in proc.stderr
    assert not (tmp_path / "r" / "feature_store.yaml").exists()

    repo = init_repo(tmp_path / "repo", project=unique_project("bad"), catalog="cat_a")
    redis_yaml = repo / "feature_store.redis.yaml"
    redis_yaml.write_text(redis_yaml.read_text().replace('"cat_a"', '"cat_b"'))
    with pytest.raises(ConfigurationError, match="declare different catalogs.*cat_b.*cat_a"):
        Catalog.for_repo(repo)
    redis_yaml.write_text(redis_yaml.read_text().replace("catalog:", "catalgo:"))
    with pytest.raises(ConfigurationError, match=r"unknown key\(s\) \['catalgo'\]"):
        Catalog.for_repo(repo)
    proc = run_cli(["feast-bc", "status", "--repo", str(repo)], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "catalgo" in proc.stderr, proc.stderr
