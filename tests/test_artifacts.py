"""Hostile or broken transform artifacts are refused before being interpreted; pickle is never loaded."""

import json
import pickle
import struct

import numpy as np
import pytest

from feast_bc import Catalog, EntitySpec
from feast_bc.artifacts import decode_transform, encode_transform
from feast_bc.atomic import sha256_bytes
from feast_bc.errors import ChecksumMismatchError, CorruptArtifactError, MissingArtifactError
from feast_bc.manifest import FamilyManifest
from feast_bc.transforms import LinearTransform


class _Payload:
    """Unpickling this creates a marker file -- proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog(tmp_path / "bc_catalog")
    rng = np.random.default_rng(0)
    cat.publish(
        "item_embedding",
        ids=np.arange(5),
        vectors=rng.normal(size=(5, 3)),
        entity=EntitySpec(name="item", join_key="item_id"),
    )
    cat.publish("item_embedding", ids=np.arange(5), vectors=rng.normal(size=(5, 4)), transform=rng.normal(size=(3, 4)))
    return cat


def _transform_path(cat):
    m = cat.manifest("item_embedding")
    return cat.artifact_path("item_embedding", m.latest.transform)


def _replace_and_reseal(cat, data: bytes):
    """An attacker who can write the catalog: swap B_1's bytes and fix up the manifest to match."""
    path = _transform_path(cat)
    path.write_bytes(data)
    mpath = cat.family_dir("item_embedding") / "manifest.json"
    raw = json.loads(mpath.read_bytes())
    raw["versions"][1]["transform"].update(sha256=sha256_bytes(data), size_bytes=len(data))
    raw["checksum"] = None
    m = FamilyManifest.model_validate(raw)
    mpath.write_bytes(m.to_json_bytes())


def test_tampered_transform_fails_checksum(catalog):
    path = _transform_path(catalog)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip one bit of the weights; size unchanged
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="fails its checksum"):
        catalog.transform("item_embedding", 1)
    with pytest.raises(ChecksumMismatchError):
        catalog.verify("item_embedding")


def test_truncated_transform_is_refused(catalog):
    path = _transform_path(catalog)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ChecksumMismatchError, match="truncated or replaced"):
        catalog.transform("item_embedding", 1)


def test_missing_transform_is_refused(catalog):
    _transform_path(catalog).unlink()
    with pytest.raises(MissingArtifactError, match="is missing"):
        catalog.composed("item_embedding", 1, 0)


def test_pickle_posing_as_transform_is_never_unpickled(catalog, tmp_path):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Payload(str(marker)))
    # 1) swapped file, manifest untouched: refused by checksum
    _transform_path(catalog).write_bytes(payload)
    with pytest.raises(ChecksumMismatchError):
        catalog.transform("item_embedding", 1)
    # 2) manifest resealed to match the pickle: refused as not-safetensors
    _replace_and_reseal(catalog, payload)
    with pytest.raises(CorruptArtifactError, match="not a safetensors file"):
        catalog.transform("item_embedding", 1)
    assert not marker.exists(), "the pickle payload was executed"


def test_wrong_dtype_is_refused(catalog):
    import safetensors.numpy

    data = safetensors.numpy.save(
        {"weight": np.ones((3, 4), dtype=np.int32)},
        metadata={"format": "feast_bc.transform/1", "kind": "linear", "in_dim": "4", "out_dim": "3"},
    )
    _replace_and_reseal(catalog, data)
    with pytest.raises(CorruptArtifactError, match="dtype I32"):
        catalog.transform("item_embedding", 1)


def test_absurd_shape_header_is_refused_without_allocation(catalog):
    header = json.dumps({"weight": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 4 * 10**18]}}).encode()
    data = struct.pack("<Q", len(header)) + header + b"\0" * 16
    _replace_and_reseal(catalog, data)
    with pytest.raises(CorruptArtifactError, match="shape"):
        catalog.transform("item_embedding", 1)


def test_huge_declared_header_is_refused():
    with pytest.raises(CorruptArtifactError, match="declared header"):
        decode_transform(struct.pack("<Q", 2**60) + b"{}", origin="test")


def test_other_format_safetensors_is_refused():
    import safetensors.numpy

    data = safetensors.numpy.save({"weight": np.ones((2, 2), np.float32)})
    with pytest.raises(CorruptArtifactError, match="not a feast_bc transform"):
        decode_transform(data, origin="test")


def test_encode_decode_roundtrip():
    w = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    t = decode_transform(encode_transform(LinearTransform(w)), origin="test")
    np.testing.assert_array_equal(t.weight, w)
