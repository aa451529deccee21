"""bc-aligner-plus and its parts: growth is function-preserving, a refit never hurts, every switch
off gives the paper's BC-Aligner, and two versions train, publish and are served by Feast."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import torch

from conftest import online_vectors, unique_project
from training.backward_fit import alignment_objective, least_squares_transform, refit_transform
from training.blend import BLEND_WEIGHTS, best_blend
from training.cache import ModelCache
from training.chain import VersionChain
from training.config import profile
from training.data import SyntheticData, load_dataset, split_version
from training.errors import ConfigError
from training.loop import FLOOR_PATIENCE, Evaluation, IntendedTask, _select_aligned, embed, fit_model
from training.models.factory import ModelSpec, build_model
from training.models.graph import build_graph
from training.models.growth import grow
from training.publish import ITEM_FAMILY, USER_FAMILY, publish_output
from training.strategies import BCAlignerPlus, make_strategy, strategy_from_spec
from training.strategies import plus as plus_module

TINY = profile("tiny")


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(SyntheticData(num_users=160, num_items=120, seed=1))


@pytest.fixture(scope="module")
def graph(dataset):
    return build_graph(dataset, split_version(dataset, 0.6, 0.7, version=1))


def _trained_like(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Perturb every weight and BatchNorm statistic so growth is tested on a non-default model."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*model.parameters(), *(b for n, b in model.named_buffers() if "running" in n)]:
            tensor.add_(0.3 * torch.randn(tensor.shape, generator=gen))
            if tensor.ndim == 1 and tensor is not None:
                tensor.abs_()  # running_var (and harmless for the rest) stays positive
    return model.eval()


@pytest.mark.parametrize(("old_arch", "new_arch"), [((8, 2), (12, 3)), ((8, 2), (8, 2)), ((8, 3), (16, 5))])
def test_growing_pinsage_preserves_its_output_exactly(dataset, graph, old_arch, new_arch):
    old = _trained_like(build_model(ModelSpec.for_dataset("pinsage", *old_arch, dataset)), seed=1)
    new = build_model(ModelSpec.for_dataset("pinsage", *new_arch, dataset))
    growth = grow(old, new, graph)
    assert growth is not None and growth.max_error < 1e-5
    (ou, oi), (nu, ni) = embed(old, graph), embed(new, graph)
    torch.testing.assert_close(nu[:, : old_arch[0]], ou, rtol=0, atol=1e-5)
    torch.testing.assert_close(ni[:, : old_arch[0]], oi, rtol=0, atol=1e-5)
    if new_arch[0] > old_arch[0]:  # the new coordinates carry something, not zeros
        assert float(nu[:, old_arch[0] :].std()) > 1e-3


def test_growing_a_one_layer_model_deeper(dataset, graph):
    """A 1-layer model has no ReLU to hide an identity layer behind: with a spare coordinate the
    growth is still exact for every node; at the same width, for every node that has neighbours."""
    old = _trained_like(build_model(ModelSpec.for_dataset("pinsage", 8, 1, dataset)), seed=2)
    degree = torch.diff(graph.mean_adjacency.crow_indices())
    connected = degree > 0
    assert bool((~connected).any()), "the split should have nodes without training edges"
    old_all = torch.cat(embed(old, graph))
    wider = build_model(ModelSpec.for_dataset("pinsage", 10, 3, dataset))
    assert grow(old, wider, graph).max_error < 1e-4
    torch.testing.assert_close(torch.cat(embed(wider, graph))[:, :8], old_all, rtol=0, atol=1e-4)
    same = build_model(ModelSpec.for_dataset("pinsage", 8, 2, dataset))
    assert grow(old, same, graph) is not None
    torch.testing.assert_close(torch.cat(embed(same, graph))[connected], old_all[connected], rtol=0, atol=1e-4)


def test_growth_refuses_what_it_cannot_preserve(dataset, graph):
    wide = build_model(ModelSpec.for_dataset("pinsage", 12, 2, dataset))
    narrow = build_model(ModelSpec.for_dataset("pinsage", 8, 2, dataset))
    before = [p.detach().clone() for p in narrow.parameters()]
    assert grow(wide, narrow, graph) is None  # fewer dimensions
    assert all(torch.equal(a, b) for a, b in zip(before, narrow.parameters(), strict=True))  # untouched
    assert grow(build_model(ModelSpec.for_dataset("pinsage", 8, 3, dataset)), wide, graph) is None  # fewer layers
    assert grow(build_model(ModelSpec.for_dataset("mf", 8, 0, dataset)), wide, graph) is None  # another model


def test_growing_matrix_factorisation(dataset, graph):
    old = _trained_like(build_model(ModelSpec.for_dataset("mf", 6, 0, dataset)), seed=3)
    new = build_model(ModelSpec.for_dataset("mf", 9, 0, dataset))
    assert grow(old, new, graph).max_error == 0.0


def test_least_squares_refit_is_numpy_lstsq_and_never_increases_the_objective():
    rng = np.random.default_rng(0)
    new_user, new_item = rng.normal(size=(50, 7)), rng.normal(size=(80, 7))
    truth = rng.normal(size=(5, 7))
    old_user = new_user @ truth.T + 0.1 * rng.normal(size=(50, 5))
    old_item = new_item @ truth.T + 0.1 * rng.normal(size=(80, 5))
    fitted = least_squares_transform(new_user, new_item, old_user, old_item, ridge=0.0)
    # Same as lstsq on rows weighted 1/n_users and 1/n_items (users and items weigh the same).
    w = np.concatenate([np.full(50, 1 / 50), np.full(80, 1 / 80)]) ** 0.5
    expected = np.linalg.lstsq(
        np.vstack([new_user, new_item]) * w[:, None], np.vstack([old_user, old_item]) * w[:, None], rcond=None
    )[0].T
    np.testing.assert_allclose(fitted, expected, rtol=1e-4, atol=1e-5)

    older = [rng.normal(size=(3, 4)), rng.normal(size=(4, 5))]  # B_1 (D_0 x D_1), B_2 (D_1 x D_2) of the chain
    for start in (rng.normal(size=(5, 7)), fitted, truth):
        weight, before, after = refit_transform(
            start.astype(np.float32), (new_user, new_item), (old_user, old_item), older
        )
        assert after <= before
        assert alignment_objective(weight, new_user, new_item, old_user, old_item, older) == pytest.approx(after)
    # Starting from the optimum itself, the refit keeps it (nothing better to find).
    best = least_squares_transform(new_user, new_item, old_user, old_item)
    again, before, after = refit_transform(best, (new_user, new_item), (old_user, old_item), older)
    assert after == before and np.array_equal(again, best)


def test_every_switch_off_is_the_papers_bc_aligner(dataset):
    plain = VersionChain(make_strategy("bc-aligner"), dataset, TINY, seed=0)
    off = make_strategy(
        "bc-aligner-plus", warm_start=False, align_nodes="batch", refit=False, selection="recall", intended_floor=0
    )
    ours = VersionChain(off, dataset, TINY, seed=0)
    for _ in range(2):
        a, b = plain.train_next(), ours.train_next()
    np.testing.assert_array_equal(a.transform, b.transform)
    np.testing.assert_array_equal(a.user_ver0, b.user_ver0)


def test_plus_options_round_trip_and_are_refused_elsewhere():
    plus = make_strategy("bc-aligner-plus", lam=4, refit=False)
    assert isinstance(plus, BCAlignerPlus) and plus.lam == 4 and not plus.refit and plus.warm_start is None
    again = strategy_from_spec(plus.spec())
    assert again.get_params() == plus.get_params()
    assert make_strategy("bc-aligner").spec().model_dump() == {"name": "bc-aligner", "lam": 16.0}
    with pytest.raises(ConfigError, match="takes no warm_start"):
        make_strategy("bc-aligner", warm_start=True)
    with pytest.raises(ConfigError, match="unknown strategy option"):
        make_strategy("bc-aligner-plus", warmstart=True)
    with pytest.raises(ConfigError, match="align_nodes must be"):
        make_strategy("bc-aligner-plus", align_nodes="some")
    with pytest.raises(ConfigError, match="warm_start must be"):
        make_strategy("bc-aligner-plus", warm_start="auto")


def test_the_start_and_the_checkpoint_rule_follow_the_model_unless_set():
    """Unset, the start is warm for PinSAGE only and the checkpoint rule follows the start; an
    explicit option wins over the model."""
    plus = make_strategy("bc-aligner-plus")
    assert plus.starts_warm("pinsage") and not plus.starts_warm("lightgcn") and not plus.starts_warm("mf")
    assert plus.selection_for(True) == "aligned" and plus.selection_for(False) == "recall"
    forced = make_strategy("bc-aligner-plus", warm_start=True, selection="aligned")
    assert forced.starts_warm("lightgcn") and forced.selection_for(False) == "aligned"
    assert not make_strategy("bc-aligner-plus", warm_start=False).starts_warm("pinsage")


def test_by_default_lightgcn_trains_what_the_fresh_variant_trains(dataset, caplog):
    """On LightGCN the default options train exactly ``warm_start=false,selection=recall`` (the
    variant measured best on it) and say so in the log; on PinSAGE the default stays warm."""
    config = profile("tiny", model="lightgcn", time_slices=(0.5, 0.7, 0.9), dims=(8, 12), layers=(2, 2))
    chain_default = VersionChain(make_strategy("bc-aligner-plus"), dataset, config, seed=0)
    chain_fresh = VersionChain(
        make_strategy("bc-aligner-plus", warm_start=False, selection="recall"), dataset, config, seed=0
    )
    with caplog.at_level("INFO", logger="training.strategies.plus"):
        for _ in range(2):
            a, b = chain_default.train_next(), chain_fresh.train_next()
    assert a.val_recall == b.val_recall and a.selected_epoch == b.selected_epoch
    np.testing.assert_array_equal(a.transform, b.transform)
    np.testing.assert_array_equal(a.item_embeddings, b.item_embeddings)
    assert "version 1 starts fresh (by model), selection recall" in caplog.text
    warm = VersionChain(make_strategy("bc-aligner-plus", warm_start=True, selection="aligned"), dataset, config, seed=0)
    warm.train_next()
    assert not np.array_equal(warm.train_next().item_embeddings, a.item_embeddings)


def test_plus_trains_two_versions_publishes_and_feast_serves_them(dataset, tmp_path):
    chain = VersionChain(make_strategy("bc-aligner-plus"), dataset, TINY, seed=0, cache=ModelCache(tmp_path / "cache"))
    v0, v1 = chain.train_next(), chain.train_next()
    assert v1.transform.shape == (TINY.dims[0], TINY.dims[1])
    # The published B_1 was refit: no other linear map of z_1 aligns better with M_0 on this graph.
    targets = tuple(z.numpy() for z in embed(chain.history.models[0], build_graph(dataset, v1.split)))
    lstsq = least_squares_transform(v1.user_embeddings, v1.item_embeddings, *targets)
    published = alignment_objective(v1.transform, v1.user_embeddings, v1.item_embeddings, *targets)
    assert published <= alignment_objective(lstsq, v1.user_embeddings, v1.item_embeddings, *targets) * (1 + 1e-6)
    paper = VersionChain(make_strategy("bc-aligner"), dataset, TINY, seed=0, cache=ModelCache(tmp_path / "cache"))
    paper.train_next()
    assert v1.alignment_error[0]["all"] < paper.train_next().alignment_error[0]["all"]

    repo = tmp_path / "repo"
    for output in (v0, v1):
        publish_output(output, repo, project=unique_project("plus"))
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    for family, join_key, ids, ver0 in (
        (USER_FAMILY, "user_id", v1.user_ids, v1.user_ver0),
        (ITEM_FAMILY, "item_id", v1.item_ids, v1.item_ver0),
    ):
        got = np.asarray(online_vectors(store, family, 0, join_key, ids), dtype=np.float64)
        np.testing.assert_allclose(got, ver0, rtol=1e-5, atol=1e-5)


def test_patience_makes_the_budget_follow_the_data(dataset):
    """With ``patience`` the epoch count is a cap: training stops once validation recall has not
    improved for that many evaluations, and the best checkpoint is the one returned."""
    config = profile("tiny", epochs=200, eval_every=1, select_after_epoch=1, patience=3)
    split = split_version(dataset, 0.5, 0.6, version=0)
    task = IntendedTask.for_split(dataset, split, config, torch.device("cpu"))
    model = build_model(ModelSpec.for_dataset("pinsage", 8, 1, dataset))
    fit = fit_model(model, task, config, np.random.default_rng(0), epochs=config.epochs, select_after=1)
    recalls = [e.recall[50] for e in fit.history]
    assert fit.epochs_run < 200 and fit.epochs_run == fit.history[-1].epoch
    best = max(recalls[1:])  # evaluations after select_after
    assert fit.val_recall[50] == best and fit.selected_epoch == fit.history[recalls.index(best)].epoch
    # It stopped exactly 3 evaluations after the first time it reached its best recall.
    assert recalls.index(best) == len(recalls) - 4 and max(recalls[-3:]) <= best


def test_a_run_stalled_below_its_recall_floor_stops_after_floor_patience_evaluations(dataset):
    """A run whose recall sits below ``min_recall`` without improving stops after FLOOR_PATIENCE
    evaluations (its later checkpoints could not be used); above the floor, or with no floor, the
    same run goes on to its epoch cap. A learning rate far below float32's resolution keeps the
    model, and so its recall, exactly where it started."""
    config = profile("tiny", epochs=12, eval_every=1, select_after_epoch=0, learning_rate=1e-12)
    split = split_version(dataset, 0.5, 0.6, version=0)
    task = IntendedTask.for_split(dataset, split, config, torch.device("cpu"))

    def run(min_recall):
        torch.manual_seed(0)
        model = build_model(ModelSpec.for_dataset("lightgcn", 8, 1, dataset))
        return fit_model(model, task, config, np.random.default_rng(0), epochs=12, min_recall=min_recall)

    unbounded = run(None)
    recall = unbounded.val_recall[50]
    assert unbounded.epochs_run == 12 and {e.recall[50] for e in unbounded.history} == {recall}
    assert run(recall).epochs_run == 12  # at the floor is not below it
    stalled = run(recall + 1e-3)
    assert stalled.epochs_run == 1 + FLOOR_PATIENCE  # the first evaluation sets the best, then 2 stale ones
    assert stalled.val_recall[50] == recall  # still the best checkpoint it saw


def test_the_blend_of_joint_and_fresh_models_is_an_exact_model_and_the_most_aligned_above_the_floor(dataset):
    """training.blend: a LightGCN with weights a·joint + (1-a)·fresh outputs a·z_joint + (1-a)·z_fresh
    exactly; best_blend keeps the lowest residual among the blends whose recall reaches the floor,
    None when no blend does or the model is not linear in its parameters (PinSAGE)."""
    config = profile("tiny", epochs=6, eval_every=2, select_after_epoch=0)
    split = split_version(dataset, 0.5, 0.6, version=1)
    task = IntendedTask.for_split(dataset, split, config, torch.device("cpu"))
    torch.manual_seed(0)
    joint = build_model(ModelSpec.for_dataset("lightgcn", 8, 2, dataset))  # untrained: the "aligned" one
    targets = embed(_trained_like(build_model(ModelSpec.for_dataset("lightgcn", 6, 2, dataset)), 1), task.graph)
    fresh = fit_model(
        build_model(ModelSpec.for_dataset("lightgcn", 8, 2, dataset)), task, config, np.random.default_rng(0), epochs=6
    ).model
    each = {w: best_blend(joint, fresh, task, targets, floor=0.0, k=50, weights=(w,)) for w in BLEND_WEIGHTS}
    model = build_model(ModelSpec.for_dataset("lightgcn", 8, 2, dataset))
    model.load_state_dict(each[0.3].state)
    (bu, bi), (ju, ji), (fu, fi) = (embed(m, task.graph) for m in (model, joint, fresh))
    torch.testing.assert_close(bu, 0.3 * ju + 0.7 * fu, rtol=0, atol=1e-6)
    torch.testing.assert_close(bi, 0.3 * ji + 0.7 * fi, rtol=0, atol=1e-6)
    recalls = sorted({b.recall for b in each.values()})
    floor = recalls[len(recalls) // 2]
    chosen = best_blend(joint, fresh, task, targets, floor=floor, k=50)
    expected = min((b for b in each.values() if b.recall >= floor), key=lambda b: b.residual)
    assert chosen is not None and chosen.weight == expected.weight and chosen.recall >= floor
    assert best_blend(joint, fresh, task, targets, floor=recalls[-1] + 1e-6, k=50) is None
    pinsage = build_model(ModelSpec.for_dataset("pinsage", 8, 1, dataset))
    assert best_blend(pinsage, pinsage, task, targets, floor=0.0, k=50) is None


def _candidate(epoch: int, recall: float, alignment: float):
    return (Evaluation(epoch, 0.0, {50: recall}, alignment), {"epoch": epoch}, None)


def test_aligned_selection_honours_the_recall_floor():
    candidates = [_candidate(0, 0.30, 0.20), _candidate(5, 0.20, 0.05), _candidate(10, 0.29, 0.08)]
    assert _select_aligned(candidates, 50)[0] == 5  # best aligned, recall ignored
    assert _select_aligned(candidates, 50, min_recall=0.28)[0] == 10  # best aligned above the floor
    assert _select_aligned(candidates, 50, min_recall=0.295)[0] == 0  # only the start reaches it
    assert _select_aligned(candidates, 50, min_recall=0.9)[0] == 5  # none does: the floor is dropped


def _plus_v1_with_its_joint_run_patched(dataset, tmp_path, monkeypatch, caplog, *, model, ratio, patch):
    """Version 1 of bc-aligner-plus at ``intended_floor=ratio`` (tiny profile), the result of its
    first ``_fit`` (the joint run) passed through ``patch(fit, fresh_recall)``
    -> (the fresh model's recall, each ``_fit`` call's keyword arguments, the chain, version 1)."""
    config = profile("tiny", model=model)
    cache = ModelCache(tmp_path / "cache")
    fresh = VersionChain(make_strategy("nobc"), dataset, config, seed=0, cache=cache)
    fresh.train_next()
    fresh_recall = fresh.train_next().record.val_recall[50]
    calls, real_fit = [], BCAlignerPlus._fit

    def patched(self, ctx, *args, **kwargs):
        fit, alignment = real_fit(self, ctx, *args, **kwargs)
        calls.append(kwargs)
        if len(calls) == 1:
            patch(fit, fresh_recall)
        return fit, alignment

    monkeypatch.setattr(BCAlignerPlus, "_fit", patched)
    chain = VersionChain(make_strategy("bc-aligner-plus", intended_floor=ratio), dataset, config, seed=0, cache=cache)
    chain.train_next()
    with caplog.at_level("INFO", logger="training.strategies.plus"):
        v1 = chain.train_next()
    return fresh_recall, calls, chain, v1


@pytest.mark.parametrize("model", ["pinsage", "lightgcn"])  # LightGCN re-aligns from a blend (training.blend)
def test_intended_floor_retrains_from_the_fresh_model_when_the_warm_start_falls_short(
    dataset, tmp_path, monkeypatch, caplog, model
):
    """A warm start whose recall is below the floor is replaced by a model re-aligned from the fresh
    (No-BC) model, whose recall reaches the floor; a warm start above it is kept as it is."""
    ratio = 1.0 if model == "pinsage" else 0.9  # below 1: some blend of joint and fresh reaches the floor

    def learned_nothing(fit, fresh_recall):  # the warm start: pretend it learned nothing, at any epoch
        fit.val_recall = {k: 0.0 for k in fit.val_recall}
        fit.best_aligned_above = None

    fresh_recall, calls, chain, v1 = _plus_v1_with_its_joint_run_patched(
        dataset, tmp_path, monkeypatch, caplog, model=model, ratio=ratio, patch=learned_nothing
    )
    assert len(calls) == 2 and calls[1].get("min_recall") == pytest.approx(ratio * fresh_recall)
    assert "re-aligning from the most aligned start" in caplog.text
    assert ("x joint +" in caplog.text) == (model == "lightgcn")  # the re-alignment started from a blend
    assert v1.record.val_recall[50] >= ratio * fresh_recall
    # The published B_1 is still the refit one: the version stays servable and aligned.
    targets = tuple(z.numpy() for z in embed(chain.history.models[0], build_graph(dataset, v1.split)))
    lstsq = least_squares_transform(v1.user_embeddings, v1.item_embeddings, *targets)
    published = alignment_objective(v1.transform, v1.user_embeddings, v1.item_embeddings, *targets)
    assert published <= alignment_objective(lstsq, v1.user_embeddings, v1.item_embeddings, *targets) * (1 + 1e-6)


def test_a_joint_checkpoint_that_passed_the_floor_early_is_the_start_when_more_aligned_than_any_blend(
    dataset, tmp_path, monkeypatch, caplog
):
    """When the joint run's selected checkpoint misses the floor but an earlier one reached it, that
    checkpoint competes with the blends as the re-alignment's start, and the more aligned of the two
    (least-squares residual) wins: here every blend is made the worse one, so the re-alignment
    starts from the checkpoint."""
    ratio = 0.5  # the joint model and the blends reach it: the choice is made by alignment alone

    def passed_early(fit, fresh_recall):  # pretend the selected epoch fell below the floor
        assert fit.val_recall[50] >= ratio * fresh_recall
        state = {n: t.clone() for n, t in fit.model.state_dict().items()}
        fit.best_aligned_above = (Evaluation(2, 0.0, dict(fit.val_recall), 0.0), state)
        fit.val_recall = {k: 0.0 for k in fit.val_recall}

    real_blend = plus_module.best_blend

    def less_aligned_blend(*args, **kwargs):  # every blend worse aligned than the early checkpoint
        blend = real_blend(*args, **kwargs)
        return None if blend is None else dataclasses.replace(blend, residual=math.inf)

    monkeypatch.setattr(plus_module, "best_blend", less_aligned_blend)
    fresh_recall, calls, _, v1 = _plus_v1_with_its_joint_run_patched(
        dataset, tmp_path, monkeypatch, caplog, model="lightgcn", ratio=ratio, patch=passed_early
    )
    assert calls[0].get("keep_above") == pytest.approx(ratio * fresh_recall)  # the joint run knew the floor
    assert "epoch 2 reached the floor" in caplog.text and "x joint +" not in caplog.text
    assert v1.record.val_recall[50] >= ratio * fresh_recall


def test_fit_model_can_keep_its_starting_point_as_a_candidate(dataset):
    config = profile("tiny", epochs=4, eval_every=2, select_after_epoch=0)
    split = split_version(dataset, 0.5, 0.6, version=0)
    task = IntendedTask.for_split(dataset, split, config, torch.device("cpu"))
    from training.alignment import JointAlignment

    old = build_model(ModelSpec.for_dataset("pinsage", 8, 1, dataset))
    targets = embed(old, task.graph)
    model = build_model(ModelSpec.for_dataset("pinsage", 8, 1, dataset))
    model.load_state_dict(old.state_dict())  # starts exactly on the targets
    alignment = JointAlignment(
        kind="learned", new_dim=8, target_user=targets[0], target_item=targets[1], lam=16.0, initial=np.eye(8)
    )
    fit = fit_model(
        model,
        task,
        config,
        np.random.default_rng(0),
        epochs=4,
        alignment=alignment,
        aligned_selection=True,
        include_start=True,
        refit=True,
        min_recall=1.1,  # unreachable: the floor is dropped, alignment decides
    )
    assert [e.epoch for e in fit.history] == [0, 2, 4]
    assert fit.history[0].alignment < 1e-6  # the start is on the targets


def test_fit_model_keeps_the_best_aligned_checkpoint_above_a_recall(dataset):
    """``keep_above``: whatever the selection rule picks, the run also returns the best-aligned of
    its checkpoints whose recall reaches the given value (bc-aligner-plus's early re-alignment start:
    a joint run can pass the floor early and end below it), and None when none reaches it."""
    from training.alignment import JointAlignment

    config = profile("tiny", epochs=8, eval_every=1, select_after_epoch=0)
    split = split_version(dataset, 0.5, 0.6, version=1)
    task = IntendedTask.for_split(dataset, split, config, torch.device("cpu"))
    targets = embed(_trained_like(build_model(ModelSpec.for_dataset("lightgcn", 6, 2, dataset)), 1), task.graph)

    def run(keep_above):
        torch.manual_seed(0)
        model = build_model(ModelSpec.for_dataset("lightgcn", 8, 2, dataset))
        alignment = JointAlignment(kind="learned", new_dim=8, target_user=targets[0], target_item=targets[1], lam=16.0)
        fit = fit_model(
            model, task, config, np.random.default_rng(0), epochs=8, alignment=alignment, keep_above=keep_above
        )
        return fit, model

    fit, _ = run(None)
    assert fit.best_aligned_above is None
    recalls = sorted(e.recall[50] for e in fit.history)
    threshold = recalls[len(recalls) // 2]  # about half the checkpoints reach it
    fit, model = run(threshold)
    eligible = [e for e in fit.history if e.recall[50] >= threshold]
    assert 0 < len(eligible) < len(fit.history)
    evaluation, state = fit.best_aligned_above
    assert evaluation is min(eligible, key=lambda e: e.alignment)
    model.load_state_dict(state)  # the kept weights are that checkpoint's, not the selected one's
    assert task.evaluator.evaluate(*embed(model, task.graph))[50] == pytest.approx(evaluation.recall[50], abs=1e-9)
    assert run(recalls[-1] + 1e-6)[0].best_aligned_above is None
