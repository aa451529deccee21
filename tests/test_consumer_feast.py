"""Consumers read version-0 embeddings through real Feast (SQLite online store): equal to the offline ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import unique_project
from feast_bc import Catalog
from training.chain import VersionChain
from training.config import profile
from training.data import SyntheticData, load_dataset
from training.experiments.consumers.feast_source import FeastVer0Source
from training.publish import USER_FAMILY
from training.strategies import make_strategy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_feast_served_version_0_equals_the_offline_chain_at_every_version(tmp_path):
    data = load_dataset(SyntheticData(num_users=120, num_items=80, seed=5, string_ids=True))
    config = profile("tiny", time_slices=(0.4, 0.6, 0.8, 1.0), dims=(8, 10, 12), layers=(1, 1, 1))
    chain = VersionChain(make_strategy("bc-aligner"), data, config, seed=3)
    source = FeastVer0Source(tmp_path / "repo", unique_project("fc"))
    for k in range(3):
        out = chain.train_next()
        users, items, check = source.fetch(out)
        assert check.passed and check.version == k and check.strategy == "bc-aligner"
        assert (check.users, check.items) == (len(out.user_ids), len(out.item_ids))
        assert users.shape == (len(out.user_ids), 8) and items.shape == (len(out.item_ids), 8)
        np.testing.assert_allclose(users, out.user_ver0, rtol=0, atol=1e-5)
        np.testing.assert_allclose(items, out.item_ver0, rtol=0, atol=1e-5)
        assert max(check.max_abs_diff_user, check.max_abs_diff_item) <= 1e-5
        if k > 0:  # what Feast serves is the composed B-chain, not a slice of the latest vectors
            assert np.abs(users - out.user_embeddings[:, :8]).max() > 1e-3
    assert Catalog.for_repo(tmp_path / "repo").manifest(USER_FAMILY).latest_version == 2

    # A consumer whose offline reference disagrees with what Feast serves is reported, not silently accepted.
    tampered = dataclasses.replace(out, user_ver0=out.user_ver0 + np.float32(1e-3))
    _, _, check = source.fetch(tampered)  # same vectors: the publish is skipped, the read compares
    assert not check.passed and check.max_abs_diff_user == pytest.approx(1e-3, rel=1e-2)
