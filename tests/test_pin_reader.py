"""Issue 26, deliverable 3: feast_bc.pin_reader.PinReader reads a pin exactly as get_online_features
does -- every id, missing ids as None -- on SQLite, Redis and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import delete_project_keys, publish_users_and_items, redis_url, unique_project
from feast_bc import Catalog
from feast_bc.errors import InvalidInputError
from feast_bc.pin_reader import PinReader
from feast_bc.repo import apply, init_repo


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis), "postgres"])
def test_the_fast_read_equals_feasts_for_every_pin_and_id(tmp_path, backend, request):
    if backend == "redis":
        request.getfixturevalue("redis_available")
    project = unique_project("pin")
    url = redis_url() if backend == "redis" else None
    repo = init_repo(tmp_path / "repo", project=project, online_store="redis" if url else "sqlite", redis_url=url)
    profile = None
    if backend == "postgres":
        profile = repo / request.getfixturevalue("postgres_server").write_profile(repo, project)
    try:
        fams = publish_users_and_items(Catalog.for_repo(repo), versions=3)
        store = apply(repo, fs_yaml_file=profile)
        store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
        for fam in fams.values():
            ids = [*map(int, fam.ids[fam.latest]), 999_999, int(fam.ids[fam.latest][0])]  # a missing id, a repeat
            for v in range(fam.latest + 1):
                service = f"{fam.name}_v{v}"
                want = store.get_online_features(
                    features=store.get_feature_service(service), entity_rows=[{fam.join_key: i} for i in ids]
                ).to_dict()["embedding"]
                got = PinReader(repo, service, store=store).read(ids)
                assert len(got) == len(want)
                for g, w in zip(got, want, strict=True):
                    if w is None:
                        assert g is None
                    else:
                        assert g.dtype == np.float32
                        np.testing.assert_array_equal(g, np.asarray(w, dtype=np.float32))
                np.testing.assert_allclose(np.stack(got[:-2]), fam.expected(v), atol=1e-5, rtol=0)
        reader = PinReader(repo, "item_embedding_v0", store=store)
        ids = [int(i) for i in fams["item_embedding"].ids[2][:5]] + [424242]
        slow = reader._feast(reader._ids(ids))  # the fallback of stores without a fast path
        for a, b in zip(reader.read(ids), slow, strict=True):
            assert (a is None and b is None) or np.array_equal(a, b)
        assert reader.read([]) == []
        with pytest.raises(InvalidInputError, match="must be integers"):
            reader.read(["a"])
    finally:
        if backend == "redis":
            delete_project_keys(redis_url(), project)
