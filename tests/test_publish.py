"""Publishing validates everything first and changes nothing on failure."""

import hashlib
import os

import numpy as np
import pytest

from feast_bc import (
    Catalog,
    DimensionMismatchError,
    DuplicateIdError,
    EntitySpec,
    InvalidInputError,
    NonFiniteError,
    UnknownFamilyError,
    VersionConflictError,
)
from feast_bc.errors import InvalidNameError

ITEM = EntitySpec(name="item", join_key="item_id")


def _snapshot(root):
    """Every file under the catalog with its content hash (lock files excluded)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f == ".lock":
                continue
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture
def two_versions(tmp_path):
    cat = Catalog(tmp_path / "bc_catalog")
    rng = np.random.default_rng(0)
    ids = np.arange(10)
    cat.publish("item_embedding", ids=ids, vectors=rng.normal(size=(10, 4)), entity=ITEM)
    cat.publish("item_embedding", ids=ids, vectors=rng.normal(size=(10, 6)), transform=rng.normal(size=(4, 6)))
    return cat


def test_publish_records_versions_dims_artifacts_and_metrics(two_versions):
    m = two_versions.manifest("item_embedding")
    assert [v.dim for v in m.versions] == [4, 6]
    assert m.latest.transform.in_dim == 6 and m.latest.transform.out_dim == 4
    assert m.latest.embeddings.rows == 10
    assert m.versions[1].created_at > m.versions[0].created_at
    # artifacts on disk match the recorded checksums
    for rec in m.versions:
        p = two_versions.artifact_path("item_embedding", rec.embeddings)
        assert hashlib.sha256(p.read_bytes()).hexdigest() == rec.embeddings.sha256
    np.testing.assert_array_equal(two_versions.latest_embeddings("item_embedding")[0], np.arange(10))


BAD_INPUTS = [
    # (kwargs override, exception, message fragment)
    (dict(transform=np.ones((5, 8))), DimensionMismatchError, "shape d_1 x d_2 = 6 x 8; got 5 x 8"),
    (dict(transform=np.ones((6, 7))), DimensionMismatchError, "6 x 8; got 6 x 7"),
    (dict(transform=None), InvalidInputError, "needs its backward transform B_2"),
    (dict(vectors="nan"), NonFiniteError, "NaN/inf"),
    (dict(vectors="inf_in_b"), NonFiniteError, "NaN/inf"),
    (dict(ids=np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 9])), DuplicateIdError, "more than once"),
    (dict(ids=np.arange(9)), DimensionMismatchError, "9 ids but 10 embedding rows"),
    (dict(ids=np.array(["a"] * 10)), InvalidInputError, "must be integers"),
    (dict(vectors="1d"), DimensionMismatchError, "2-D"),
    (dict(metrics={"recall": float("nan")}), InvalidInputError, "finite"),
    (dict(entity=EntitySpec(name="user", join_key="user_id")), InvalidInputError, "belongs to entity"),
    (dict(expected_version=5), VersionConflictError, "next version is 2"),
]


@pytest.mark.parametrize("override, exc, message", BAD_INPUTS)
def test_bad_publish_is_refused_and_changes_nothing(two_versions, override, exc, message):
    before = _snapshot(two_versions.root)
    rng = np.random.default_rng(1)
    kwargs = dict(ids=np.arange(10), vectors=rng.normal(size=(10, 8)), transform=rng.normal(size=(6, 8)))
    kwargs.update(override)
    if isinstance(kwargs["vectors"], str):
        kind = kwargs["vectors"]
        v = rng.normal(size=(10, 8))
        if kind == "nan":
            v[3, 2] = np.nan
        elif kind == "1d":
            v = v[:, 0]
        kwargs["vectors"] = v
        if kind == "inf_in_b":
            kwargs["vectors"] = rng.normal(size=(10, 8))
            b = rng.normal(size=(6, 8))
            b[0, 0] = np.inf
            kwargs["transform"] = b
    with pytest.raises(exc, match=message):
        two_versions.publish("item_embedding", **kwargs)
    assert _snapshot(two_versions.root) == before


def test_first_publish_needs_entity_and_no_transform(tmp_path):
    cat = Catalog(tmp_path)
    with pytest.raises(InvalidInputError, match="must name its entity"):
        cat.publish("item_embedding", ids=[1], vectors=np.ones((1, 2)))
    with pytest.raises(InvalidInputError, match="version 0 has no older version"):
        cat.publish("item_embedding", ids=[1], vectors=np.ones((1, 2)), transform=np.ones((2, 2)), entity=ITEM)
    with pytest.raises(InvalidNameError, match="_v<N>"):
        cat.publish("item_v2", ids=[1], vectors=np.ones((1, 2)), entity=ITEM)
    with pytest.raises(UnknownFamilyError, match=r"no embedding family 'item_embedding'.*none published"):
        cat.manifest("item_embedding")
    assert cat.families() == []


def test_crash_while_writing_artifacts_leaves_last_good_state(two_versions, monkeypatch):
    import feast_bc.catalog.publishing as publishing

    before = _snapshot(two_versions.root)

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(publishing, "write_transform", boom)
    rng = np.random.default_rng(2)
    with pytest.raises(OSError, match="disk full"):
        two_versions.publish(
            "item_embedding", ids=np.arange(10), vectors=rng.normal(size=(10, 8)), transform=rng.normal(size=(6, 8))
        )
    # the embeddings written before the failure were removed again; the manifest is untouched
    assert _snapshot(two_versions.root) == before
    assert two_versions.orphans("item_embedding") == []
    assert two_versions.manifest("item_embedding").latest_version == 1


def test_crash_while_replacing_manifest_keeps_old_manifest(two_versions, monkeypatch):
    import feast_bc.catalog.publishing as publishing

    before = _snapshot(two_versions.root)
    monkeypatch.setattr(publishing, "atomic_write_bytes", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    rng = np.random.default_rng(3)
    with pytest.raises(OSError):
        two_versions.publish(
            "item_embedding", ids=np.arange(10), vectors=rng.normal(size=(10, 8)), transform=rng.normal(size=(6, 8))
        )
    assert _snapshot(two_versions.root) == before


def test_string_ids_family(tmp_path):
    cat = Catalog(tmp_path)
    spec = EntitySpec(name="sku", join_key="sku_id", dtype="string")
    cat.publish("sku_embedding", ids=np.array(["b", "a", "c"]), vectors=np.eye(3), entity=spec)
    ids, vecs = cat.latest_embeddings("sku_embedding", ids=["c", "a"])
    assert list(ids) == ["c", "a"]
    np.testing.assert_array_equal(vecs, np.eye(3)[[2, 1]])


def test_orphans_are_reported_and_collected(two_versions):
    art = two_versions.family_dir("item_embedding") / "artifacts"
    stray = art / ".v0002-embeddings.abc123.tmp"  # what a publish killed mid-write leaves
    stray.write_bytes(b"partial")
    leftover = art / "v0002-transform-0123456789abcdef.safetensors"  # killed after artifacts, before manifest
    leftover.write_bytes(b"x")
    assert two_versions.orphans("item_embedding") == sorted([stray, leftover])
    assert two_versions.collect_garbage("item_embedding", dry_run=True) == sorted([stray, leftover])
    assert stray.exists()
    two_versions.collect_garbage("item_embedding")
    assert two_versions.orphans("item_embedding") == [] and not stray.exists()
    two_versions.verify("item_embedding")  # everything referenced is still there


def test_prune_superseded_embeddings_keeps_the_manifest_consistent(two_versions):
    m = two_versions.manifest("item_embedding")
    old = two_versions.artifact_path("item_embedding", m.versions[0].embeddings)
    removed = two_versions.collect_garbage("item_embedding", prune=True)
    assert removed == [old] and not old.exists()
    m2 = two_versions.manifest("item_embedding")
    assert m2.versions[0].embeddings is None and m2.latest.embeddings == m.latest.embeddings
    two_versions.verify("item_embedding")
    # serving from the latest is unaffected
    assert two_versions.composed("item_embedding", 1, 0).out_dim == 4


def test_prune_drops_transforms_behind_retired_versions(two_versions):
    rng = np.random.default_rng(4)
    two_versions.publish(
        "item_embedding", ids=np.arange(10), vectors=rng.normal(size=(10, 5)), transform=rng.normal(size=(6, 5))
    )
    two_versions.retire("item_embedding", 0)
    m = two_versions.manifest("item_embedding")
    b1 = two_versions.artifact_path("item_embedding", m.versions[1].transform)
    removed = two_versions.collect_garbage("item_embedding", prune=True)
    assert b1 in removed and not b1.exists()
    m2 = two_versions.manifest("item_embedding")
    assert m2.versions[1].transform is None and m2.versions[2].transform is not None  # B_2 still serves v1
    assert two_versions.composed("item_embedding", 2, 1).out_dim == 6
    two_versions.verify("item_embedding")
