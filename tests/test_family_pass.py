"""The shared pass over a family's latest file: reused output buffers, concurrent transforms, the
BLAS thread limit -- the same floats whichever way, and no buffer handed out while in use."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import publish_users_and_items
from feast_bc import Catalog
from feast_bc.materialize.stream import OutputBuffers, blas_threads, family_parts
from feast_bc.materialize.unit import ViewWindow


def test_a_buffer_comes_back_only_once_nothing_refers_to_it():
    pool = OutputBuffers(keep=2)
    a = pool.take(10, 4, 16)
    b = pool.take(16, 4, 16)
    assert a.base is not b.base  # a is still held
    assert a.shape == (10, 4) and b.shape == (16, 4) and a.flags.c_contiguous
    a_base = id(a.base)  # the id only: a reference would keep the buffer busy
    part = a[3:5]  # a slice still refers to the buffer
    del a
    assert id(pool.take(10, 4, 16).base) != a_base
    del part
    assert id(pool.take(8, 4, 16).base) == a_base  # free again: reused
    held = [pool.take(16, 4, 16) for _ in range(3)]  # beyond keep: new arrays, not kept
    assert len({id(h.base) for h in held}) == 3 and len(pool._pool[(16, 4)]) == 2


def _parts(catalog: Catalog, family: str, transform_threads: int, batch_rows: int = 16):
    manifest = catalog.manifest(family)
    path = catalog.artifact_path(family, manifest.latest.embeddings)
    windows = [ViewWindow(v, None, None) for v in range(manifest.latest_version, -1, -1)]
    parts = family_parts(pq.ParquetFile(path), catalog, manifest, windows, batch_rows, None, transform_threads)
    return [(p.ids.copy(), {i: v.copy() for i, v in p.vectors.items()}, id_bases(p)) for p in parts]


def id_bases(part) -> set[int]:
    return {id(v.base if v.base is not None else v) for v in part.vectors.values()}


@pytest.mark.parametrize("threads", [2, 3])
def test_concurrent_transforms_give_the_same_floats_as_one_thread(tmp_path, threads):
    catalog = Catalog(tmp_path / "catalog")
    fams = publish_users_and_items(catalog, versions=4, seed=4)
    for family in fams:
        alone = _parts(catalog, family, 1)
        together = _parts(catalog, family, threads)
        assert len(alone) == len(together) == 3  # 40 rows in batches of 16
        for (ids_a, vec_a, _), (ids_b, vec_b, bases) in zip(alone, together, strict=True):
            np.testing.assert_array_equal(ids_a, ids_b)
            assert vec_a.keys() == vec_b.keys() == {0, 1, 2, 3}
            for i in vec_a:
                np.testing.assert_array_equal(vec_a[i], vec_b[i])  # bit for bit
            assert len(bases) == 4  # every view of a part in its own memory


def test_blas_threads_limits_inside_the_block_and_restores_after():
    from threadpoolctl import threadpool_info

    def blas() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas()
    with blas_threads(1):
        assert all(n == 1 for n in blas())
    assert blas() == before
    with blas_threads(None):  # left as it is
        assert blas() == before
