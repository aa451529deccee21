"""The eight strategies end to end on small synthetic data, and what each one publishes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.cache import ModelCache
from training.chain import VersionChain, resolve_device
from training.config import profile
from training.data import SyntheticData, load_dataset
from training.errors import ConfigError, DeviceError, StateError
from training.evaluation import RecallEvaluator
from training.strategies import STRATEGY_NAMES, make_strategy


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(SyntheticData(num_users=160, num_items=120, seed=1))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return ModelCache(tmp_path_factory.mktemp("model-cache"))


TINY = profile("tiny")


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_strategy_trains_two_versions(name, dataset, cache):
    chain = VersionChain(make_strategy(name), dataset, TINY, seed=0, cache=cache)
    v0, v1 = chain.train_next(), chain.train_next()
    d0 = TINY.dims[0]
    d1 = d0 if name in ("fix-m0", "finetune-m0") else TINY.dims[1]  # those keep M_0's architecture

    for out in (v0, v1):
        s = out.split
        assert out.user_embeddings.shape == (s.num_users, out.dim) and out.item_embeddings.shape == (
            s.num_items,
            out.dim,
        )
        assert np.isfinite(out.user_embeddings).all() and np.isfinite(out.item_embeddings).all()
        np.testing.assert_array_equal(out.user_ids, dataset.user_ids[: s.num_users])  # raw ids, index order
        assert set(out.val_recall) == {10, 20, 50, 100}
        assert 0 < out.val_recall[50] <= 1 and out.val_recall[10] <= out.val_recall[50] <= out.val_recall[100]
        assert out.user_ver0.shape == (s.num_users, d0)
    assert v0.transform is None and v0.alignment_error == {} and v0.dim == d0
    np.testing.assert_array_equal(v0.user_ver0, v0.user_embeddings)
    assert v1.split.num_users >= v0.split.num_users and v1.dim == d1
    assert v1.transform.shape == (d0, d1)

    # The ver-0-compatible embeddings are exactly the published B_1 applied to z_1.
    np.testing.assert_allclose(v1.user_ver0, v1.user_embeddings @ v1.transform.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v1.item_ver0, v1.item_embeddings @ v1.transform.T, rtol=1e-5, atol=1e-5)
    expected_kind = {
        "fix-m0": "identity",
        "finetune-m0": "identity",
        "nobc": "truncation",
        "joint-notrans": "truncation",
    }
    assert v1.transform_kind == expected_kind.get(name, "learned")
    if v1.transform_kind == "identity":
        np.testing.assert_array_equal(v1.transform, np.eye(d0))
    elif v1.transform_kind == "truncation":
        np.testing.assert_array_equal(v1.transform, np.eye(d0, d1))
        np.testing.assert_array_equal(v1.user_ver0, v1.user_embeddings[:, :d0])
    else:
        assert np.abs(v1.transform[:, :d0] - np.eye(d0)).max() > 1e-2  # really learned, not [I 0]

    err = v1.alignment_error[0]
    assert set(err) == {"user", "item", "all"} and min(err.values()) >= 0
    if name == "fix-m0":  # M_0 on the new graph *is* the reference: zero error, and no training
        assert err["all"] == pytest.approx(0.0, abs=1e-5) and v1.selected_epoch is None
    else:
        assert err["all"] > 1e-3 and v1.selected_epoch is not None
    if name == "finetune-m0":
        assert v1.epochs_run == TINY.finetune_epochs
    metrics = v1.metrics("user")
    assert metrics["val_recall@50"] == v1.val_recall[50] and metrics["align_error_v0"] == err["user"]


def test_bc_aligner_aligns_far_better_than_nobc_and_keeps_recall(cache):
    data = load_dataset(SyntheticData(num_users=200, num_items=200, seed=1))
    config = profile(
        "tiny",
        dims=(16, 20, 24, 28, 32),
        layers=(1, 1, 2, 2, 2),
        epochs=30,
        batch_size=512,
        eval_every=5,
        select_after_epoch=8,
    )
    runs = {}
    for name in ("nobc", "bc-aligner"):
        chain = VersionChain(make_strategy(name), data, config, seed=0, cache=cache)
        runs[name] = [chain.train_next() for _ in range(3)]
    split = runs["nobc"][1].split
    g = torch.Generator().manual_seed(0)
    chance = RecallEvaluator(split).evaluate(
        torch.randn(split.num_users, 16, generator=g), torch.randn(split.num_items, 16, generator=g)
    )[50]
    for k in (1, 2):
        bc, nobc = runs["bc-aligner"][k], runs["nobc"][k]
        assert bc.alignment_error[0]["all"] < 0.6 * nobc.alignment_error[0]["all"], (
            k,
            bc.alignment_error,
            nobc.alignment_error,
        )
        assert bc.alignment_error[k - 1]["all"] < 0.6 * nobc.alignment_error[k - 1]["all"]
        assert bc.val_recall[50] > 0.8 * nobc.val_recall[50], (k, bc.val_recall, nobc.val_recall)
        assert bc.val_recall[50] > chance + 0.2, (bc.val_recall[50], chance)


def test_version_zero_and_posthoc_models_are_shared_exactly(dataset, tmp_path):
    # Without a cache: version 0 is the same model for every strategy (same seed, same data).
    a = VersionChain(make_strategy("nobc"), dataset, TINY, seed=3).train_next()
    b = VersionChain(make_strategy("bc-aligner"), dataset, TINY, seed=3).train_next()
    np.testing.assert_array_equal(a.user_embeddings, b.user_embeddings)
    c = VersionChain(make_strategy("nobc"), dataset, TINY, seed=4).train_next()
    assert not np.allclose(a.user_embeddings, c.user_embeddings)

    # With a cache: post-hoc strategies reuse the No-BC models, as in the paper.
    cache = ModelCache(tmp_path / "cache")
    nobc = VersionChain(make_strategy("nobc"), dataset, TINY, seed=3, cache=cache)
    posthoc = VersionChain(make_strategy("posthoc-lin-mloss"), dataset, TINY, seed=3, cache=cache)
    _, n1 = nobc.train_next(), nobc.train_next()
    p0, p1 = posthoc.train_next(), posthoc.train_next()
    assert not n1.from_cache and p0.from_cache and p1.from_cache
    np.testing.assert_array_equal(n1.item_embeddings, p1.item_embeddings)
    assert p1.val_recall == n1.val_recall
    assert p1.alignment_error[0]["all"] < n1.alignment_error[0]["all"]


def test_mf_baseline_runs_a_bc_aligner_chain(dataset):
    config = profile("tiny", model="mf")
    chain = VersionChain(make_strategy("bc-aligner"), dataset, config, seed=0)
    _, v1 = chain.train_next(), chain.train_next()
    assert v1.spec.kind == "mf" and v1.transform.shape == (config.dims[0], config.dims[1])
    assert v1.user_embeddings.shape == (v1.split.num_users, config.dims[1])


def test_refusals_are_clear(dataset):
    with pytest.raises(ConfigError, match="unknown strategy 'bc-alignr'"):
        make_strategy("bc-alignr")
    with pytest.raises(ConfigError, match="'nobc' has no alignment loss"):
        make_strategy("nobc", lam=4)
    assert make_strategy("joint-lin-mloss").name == "bc-aligner" and make_strategy("bc-aligner", lam=4).lam == 4.0
    shrinking = profile("tiny", dims=(16, 8, 8, 8, 8))
    for name in ("nobc", "joint-notrans"):
        with pytest.raises(ConfigError, match="needs D_k >= D_\\(k-1\\); version 1 has D=8 < 16"):
            VersionChain(make_strategy(name), dataset, shrinking)
    VersionChain(make_strategy("bc-aligner"), dataset, shrinking)  # a learned B can shrink
    with pytest.raises(ValueError, match="need 2 dims and layers"):
        profile("tiny", time_slices=(0.5, 0.75, 1.0))
    two = profile("tiny", time_slices=(0.5, 0.75, 1.0), dims=(8, 8), layers=(1, 1))
    chain = VersionChain(make_strategy("finetune-m0"), dataset, two)
    chain.train_next(), chain.train_next()
    with pytest.raises(StateError, match="all 2 versions"):
        chain.train_next()
    with pytest.raises(ValueError, match="select_after_epoch"):
        profile("tiny", epochs=5, select_after_epoch=5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(DeviceError, match="CUDA is not available.*use --device cpu"):
        resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"
