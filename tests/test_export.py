"""Offline access: export of any version equals the numpy chain and what Feast serves online."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import online_vectors, publish_users_and_items, run_cli, unique_project
from feast_bc import Catalog, UnknownIdError, UnknownVersionError, export_version
from feast_bc.repo import apply, init_repo


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    repo = init_repo(tmp_path_factory.mktemp("export") / "repo", project=unique_project("ex"))
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=3)
    return repo, fams


def test_export_every_version_equals_numpy_chain(published):
    repo, fams = published
    for fam in fams.values():
        for v in range(3):
            table = export_version(repo, fam.name, v)
            assert table.column_names == [fam.join_key, "embedding", "source_version"]
            np.testing.assert_array_equal(table.column(fam.join_key).to_numpy(), fam.ids[2])
            got = np.asarray(table.column("embedding").to_pylist(), dtype=np.float64)
            np.testing.assert_allclose(got, fam.expected(v), atol=1e-5, rtol=0)
            assert set(table.column("source_version").to_pylist()) == {2}


def test_export_selected_ids_in_given_order(published):
    repo, fams = published
    items = fams["item_embedding"]
    wanted = [int(items.ids[2][5]), int(items.ids[2][0]), int(items.ids[2][9])]
    table = export_version(repo, "item_embedding", 0, ids=wanted)
    assert table.column("item_id").to_pylist() == wanted
    np.testing.assert_allclose(
        np.asarray(table.column("embedding").to_pylist()), items.expected(0, wanted), atol=1e-5, rtol=0
    )


def test_export_equals_online_values(published):
    repo, fams = published
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    for fam in fams.values():
        ids = fam.ids[2]
        for v in range(3):
            online = np.asarray(online_vectors(store, fam.name, v, fam.join_key, ids), dtype=np.float32)
            offline = np.asarray(export_version(repo, fam.name, v).column("embedding").to_pylist(), dtype=np.float32)
            np.testing.assert_allclose(online, offline, atol=1e-6, rtol=0)


def test_unknown_version_and_ids_are_clear_errors(published):
    repo, fams = published
    with pytest.raises(UnknownVersionError, match=r"no version 7; available versions: 0, 1, 2 \(latest 2\)"):
        export_version(repo, "item_embedding", 7)
    with pytest.raises(UnknownIdError, match="not in the latest embeddings"):
        export_version(repo, "item_embedding", 0, ids=[999_999])


def test_cli_export_writes_parquet_and_refuses_bad_requests(published, tmp_path):
    repo, fams = published
    items = fams["item_embedding"]
    out = tmp_path / "v1.parquet"
    ids = [str(i) for i in items.ids[2][:4]]
    proc = run_cli(
        [
            "feast-bc",
            "export",
            "--repo",
            str(repo),
            "--family",
            "item_embedding",
            "--version",
            "1",
            "--out",
            str(out),
            "--ids",
            *ids,
        ]
    )
    assert "wrote 4 rows" in proc.stdout
    table = pq.read_table(out)
    np.testing.assert_allclose(
        np.asarray(table.column("embedding").to_pylist()), items.expected(1, [int(i) for i in ids]), atol=1e-5, rtol=0
    )
    bad = run_cli(
        [
            "feast-bc",
            "export",
            "--repo",
            str(repo),
            "--family",
            "item_embedding",
            "--version",
            "9",
            "--out",
            str(tmp_path / "x.parquet"),
        ],
        check=False,
    )
    assert bad.returncode == 2
    assert "available versions: 0, 1, 2" in bad.stderr
    assert not (tmp_path / "x.parquet").exists()
    bad = run_cli(
        [
            "feast-bc",
            "export",
            "--repo",
            str(repo),
            "--family",
            "nope_embedding",
            "--version",
            "0",
            "--out",
            str(tmp_path / "y.parquet"),
        ],
        check=False,
    )
    assert bad.returncode == 2 and "available families: item_embedding, user_embedding" in bad.stderr
