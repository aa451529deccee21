"""Issue 26, deliverable 2: QueryMapper maps new-version query vectors into an old version's space
with the pin's own composed matrix."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import publish_users_and_items
from feast_bc import Catalog
from feast_bc.errors import DimensionMismatchError
from feast_bc.export import export_version
from feast_bc.query_mapping import QueryMapper


def test_mapped_queries_are_what_the_pin_serves(tmp_path):
    catalog = Catalog(tmp_path / "bc_catalog")
    fam = publish_users_and_items(catalog, versions=3)["item_embedding"]
    k = fam.latest
    for target in range(k + 1):
        mapper = QueryMapper(catalog, fam.name, target=target)
        got = mapper.map(fam.vectors[k])
        np.testing.assert_allclose(got, fam.expected(target), atol=1e-5, rtol=0)
        exported = np.stack(export_version(catalog, fam.name, target).column("embedding").to_pylist())
        np.testing.assert_allclose(got, exported, atol=1e-6, rtol=0)  # the very values of the pin
        assert mapper.map(fam.vectors[k][0]).shape == (fam.vectors[target].shape[1],)
    from_middle = QueryMapper(catalog, fam.name, target=0, source=1)
    z1 = np.random.default_rng(0).normal(size=(4, fam.vectors[1].shape[1])).astype(np.float32)
    np.testing.assert_allclose(from_middle.map(z1), z1.astype(np.float64) @ fam.transforms[1].T, atol=1e-5, rtol=0)
    with pytest.raises(DimensionMismatchError, match="dimension"):
        QueryMapper(catalog, fam.name, target=0).map(np.ones((1, 3)))
