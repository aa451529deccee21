import json
from datetime import UTC, datetime, timedelta

import pytest

from feast_bc.errors import ManifestError, UnknownVersionError
from feast_bc.manifest import EmbeddingsArtifact, EntitySpec, FamilyManifest, TransformArtifact, VersionRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SHA = "a" * 64


def _manifest(dims=(4, 6, 8)):
    versions = []
    for v, d in enumerate(dims):
        versions.append(
            VersionRecord(
                version=v,
                dim=d,
                created_at=T0 + timedelta(hours=v),
                embeddings=EmbeddingsArtifact(path=f"artifacts/e{v}.parquet", sha256=SHA, size_bytes=10, rows=3),
                transform=None
                if v == 0
                else TransformArtifact(
                    path=f"artifacts/t{v}.safetensors",
                    sha256=SHA,
                    size_bytes=5,
                    kind="linear",
                    in_dim=d,
                    out_dim=dims[v - 1],
                ),
                metrics={"recall": 0.5},
            )
        )
    return FamilyManifest(
        family="item_embedding", entity=EntitySpec(name="item", join_key="item_id"), versions=versions
    )


def test_roundtrip_is_sealed_and_verified():
    m = _manifest()
    data = m.to_json_bytes()
    back = FamilyManifest.from_json_bytes(data)
    assert back.checksum == m.computed_checksum()
    assert back.latest_version == 2 and back.version(1).dim == 6
    assert [t.in_dim for t in back.chain(2, 0)] == [8, 6]


def test_tampered_manifest_fails_its_checksum():
    raw = json.loads(_manifest().to_json_bytes())
    raw["versions"][0]["metrics"]["recall"] = 0.9  # a valid manifest, but not the one that was sealed
    with pytest.raises(ManifestError, match="fails its checksum"):
        FamilyManifest.from_json_bytes(json.dumps(raw).encode())


def _reseal(raw: dict) -> dict:
    """What a buggy writer (or an attacker) would produce: invalid content with a matching seal."""
    from feast_bc.atomic import sha256_bytes

    content = {k: v for k, v in raw.items() if k != "checksum"}
    raw["checksum"] = sha256_bytes(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
    return raw


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.update(schema_version=2), "schema_version 2"),
        (lambda r: r.update(checksum=None), "no checksum"),
        (lambda r: _reseal(r) and r["versions"][2]["transform"].update(in_dim=5), "fails its checksum"),
        (lambda r: _reseal(r["versions"][2]["transform"].update(in_dim=5) or r), "B_2 maps"),
        (lambda r: _reseal(r["versions"].pop(1) and r), "without gaps"),
        (lambda r: _reseal(r["versions"][1]["embeddings"].update(path="../../etc/passwd") or r), "stay inside"),
        (
            lambda r: _reseal(r["versions"][2].update(retired_at="2026-02-01T00:00:00Z") or r),
            "latest version cannot be retired",
        ),
    ],
)
def test_invalid_manifests_are_refused(mutate, message):
    raw = json.loads(_manifest().to_json_bytes())
    mutate(raw)
    with pytest.raises(ManifestError, match=message):
        FamilyManifest.from_json_bytes(json.dumps(raw).encode())


def test_garbage_is_refused():
    with pytest.raises(ManifestError, match="not valid JSON"):
        FamilyManifest.from_json_bytes(b"\x80\x04\x95 pickle?")


def test_unknown_version_lists_available_ones():
    with pytest.raises(UnknownVersionError, match="available versions: 0, 1, 2"):
        _manifest().version(7)
    with pytest.raises(UnknownVersionError, match="forward"):
        _manifest().chain(0, 2)
