"""The non-linear backward adapter end to end: fitted in training (torch), stored as safetensors,
served by Feast through feast_bc's numpy formula -- equal to the fitted map within 1e-5."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import online_vectors, unique_project


def _planted(rng, n, din, dout):
    """Rows and a target that is a linear map plus a smooth non-linear part."""
    a = rng.normal(size=(dout, din)) / 5
    c = rng.normal(size=(dout, din)) / 5
    z = rng.normal(size=(n, din)).astype(np.float32)
    return z, (z @ a.T + np.tanh(z @ c.T)).astype(np.float32)


@pytest.fixture(scope="module")
def planted_fit(one_torch_thread):
    from training.adapter_fit import AdapterSettings, fit_residual_adapter

    rng = np.random.default_rng(0)
    zu, tu = _planted(rng, 800, 12, 8)
    zi, ti = _planted(np.random.default_rng(0), 1600, 12, 8)  # the same map for items
    fit = fit_residual_adapter((zu, zi), (tu, ti), AdapterSettings(hidden=32, max_steps=1000))
    return fit, (zu, zi), (tu, ti)


def test_the_adapter_beats_least_squares_on_entities_it_never_saw(planted_fit):
    fit, _, _ = planted_fit
    assert fit.steps > 0
    assert fit.holdout_residual < 0.5 * fit.holdout_residual_linear
    assert fit.residual < 0.5 * fit.residual_linear
    assert fit.parameters == sum(a.size for a in fit.transform.to_tensors().values())


def test_the_adapter_keeps_the_linear_map_when_the_correction_does_not_generalise(one_torch_thread):
    """An exactly linear relation with noise targets: nothing for the correction to learn that
    transfers, so the steps chosen on held-out entities stay few and nothing gets worse there."""
    from training.adapter_fit import AdapterSettings, fit_residual_adapter

    rng = np.random.default_rng(1)
    z = rng.normal(size=(300, 12)).astype(np.float32)
    t = (z @ rng.normal(size=(8, 12)).T + rng.normal(size=(300, 8))).astype(np.float32)
    fit = fit_residual_adapter((z[:100], z[100:]), (t[:100], t[100:]), AdapterSettings(hidden=64, max_steps=600))
    assert fit.holdout_residual <= fit.holdout_residual_linear + 1e-6


def test_feast_serves_every_pin_behind_a_fitted_adapter_as_the_training_side_computes(tmp_path, planted_fit):
    """B_2 is the fitted adapter between two linear steps; each pin read through its Feast
    FeatureService equals the chain applied in float64 within 1e-5 (and the training-side module)."""
    import torch

    from feast_bc import Catalog, EntitySpec
    from feast_bc.repo import apply, init_repo
    from feast_bc.transforms import LinearTransform, ResidualMLPTransform
    from training.adapter_fit import _Adapter

    fit, _, _ = planted_fit
    adapter = fit.transform  # 12 -> 8
    rng = np.random.default_rng(2)
    ids = np.arange(25, dtype=np.int64) * 5 + 1
    dims = [6, 8, 12, 16]
    steps = {
        1: LinearTransform(rng.normal(size=(6, 8)) / 3),
        2: adapter,
        3: LinearTransform(rng.normal(size=(12, 16)) / 4),
    }
    repo = init_repo(tmp_path / "r", project=unique_project("mlp"))
    catalog = Catalog.for_repo(repo)
    latest = None
    for v, dim in enumerate(dims):
        latest = rng.normal(size=(len(ids), dim)).astype(np.float32)
        catalog.publish(
            "item_embedding",
            ids=ids,
            vectors=latest,
            transform=steps.get(v),
            entity=EntitySpec(name="item", join_key="item_id") if v == 0 else None,
            metrics={"val_recall@50": 0.1},
        )
    manifest = catalog.manifest("item_embedding")
    assert manifest.version(2).transform.kind == "residual_mlp"
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))

    # The training side's module, loaded with the same weights, gives the same map (export == serve).
    module = _Adapter(adapter.weight, adapter.hidden_dim, 1.0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        module.hidden_weight.copy_(torch.from_numpy(adapter.hidden_weight))
        module.hidden_bias.copy_(torch.from_numpy(adapter.hidden_bias[0]))
        module.output_weight.copy_(torch.from_numpy(adapter.output_weight))
        module.output_bias.copy_(torch.from_numpy(adapter.output_bias[0]))
    expected = {3: latest.astype(np.float64)}
    expected[2] = expected[3] @ steps[3].weight.T.astype(np.float64)
    with torch.no_grad():
        expected[1] = module(torch.from_numpy(expected[2].astype(np.float32))).double().numpy()
    expected[0] = expected[1] @ steps[1].weight.T.astype(np.float64)
    assert isinstance(catalog.composed("item_embedding", 3, 0), ResidualMLPTransform)  # one map per row
    for v in range(4):
        got = np.asarray(online_vectors(store, "item_embedding", v, "item_id", ids), dtype=np.float64)
        np.testing.assert_allclose(got, expected[v], atol=1e-5, rtol=0, err_msg=f"version {v}")
