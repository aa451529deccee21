"""A row's event timestamp names the published version it comes from -- the one rule both the view
UDFs and BCEngine use to tell which chain of transforms a row needs."""

from datetime import timedelta

import numpy as np
import pytest

from feast_bc import Catalog, CatalogRollbackError, EntitySpec
from feast_bc.errors import RegistryLagError
from feast_bc.provenance import version_groups, version_published_at


def _micros(ts) -> int:
    return int(np.datetime64(ts.replace(tzinfo=None), "us").astype(np.int64))


@pytest.fixture
def manifest(tmp_path):
    cat = Catalog(tmp_path / "bc_catalog")
    rng = np.random.default_rng(0)
    cat.publish(
        "item_embedding",
        ids=np.arange(5),
        vectors=rng.normal(size=(5, 3)),
        entity=EntitySpec(name="item", join_key="item_id"),
    )
    cat.publish("item_embedding", ids=np.arange(5), vectors=rng.normal(size=(5, 4)), transform=rng.normal(size=(3, 4)))
    return cat.manifest("item_embedding")


def test_each_publish_time_names_its_version(manifest):
    for rec in manifest.versions:
        assert version_published_at(manifest, _micros(rec.created_at)) == rec.version


def test_rows_of_one_version_are_one_group_and_mixed_rows_are_split(manifest):
    t0, t1 = (_micros(rec.created_at) for rec in manifest.versions)
    [(version, when, rows)] = version_groups(np.full(4, t1), manifest)
    assert (version, when, rows) == (1, manifest.versions[1].created_at, None)
    groups = version_groups(np.array([t1, t0, t1, t0, t1]), manifest)
    assert [(v, w) for v, w, _ in groups] == [
        (0, manifest.versions[0].created_at),
        (1, manifest.versions[1].created_at),
    ]
    assert [r.tolist() for _, _, r in groups] == [[1, 3], [0, 2, 4]]
    assert version_groups(np.array([], dtype=np.int64), manifest) == []


def test_unknown_and_too_new_times_are_refused(manifest):
    latest = manifest.latest.created_at
    with pytest.raises(CatalogRollbackError, match="newer than the catalog's latest version 1"):
        version_groups(np.array([_micros(latest + timedelta(microseconds=1))]), manifest)
    with pytest.raises(RegistryLagError, match="match no published version"):
        version_published_at(manifest, _micros(latest - timedelta(microseconds=1)))
