"""Losses, sampling, evaluation and the GNN, each checked against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.data import build_dataset, split_version
from training.data.dataset import AttributeGroup
from training.evaluation import RecallEvaluator
from training.models import ModelSpec, build_graph, build_model
from training.objectives import (
    alignment_metric,
    bpr_loss,
    bpr_loss_gathered,
    metric_alignment_loss,
    multi_step_alignment_loss,
    single_step_alignment_loss,
)
from training.sampling import BPRSampler


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_bpr_loss_matches_hand_computation():
    zu, zp, zn = _t([[1.0, 0.0], [0.5, 0.5]]), _t([[2.0, 1.0], [0.0, 1.0]]), _t([[0.0, 1.0], [1.0, 1.0]])
    # row 0: pos 2, neg 0 -> softplus(-2); row 1: pos 0.5, neg 1 -> softplus(0.5)
    ranking = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(0.5))) / 2
    l2 = 0.5 * ((1 + 0.5) + (5 + 1) + (1 + 2)) / 2  # (||Zu||² + ||Zp||² + ||Zn||²) / (2B)
    assert float(bpr_loss(zu, zp, zn, l2_weight=0.01)) == pytest.approx(ranking + 0.01 * l2, abs=1e-12)


def _alignment_example():
    """k = 2: D_2 = 3, D_1 = 2, D_0 = 1. Batch of 3 triples with a repeated user."""
    b2 = [[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]]  # B_2: (D_1, D_2)
    b1 = [[0.5, 2.0]]  # B_1: (D_0, D_1), frozen
    z_user = [[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]]  # version-2 embeddings of the 2 users
    z_item = [[1.0, 0.0, 1.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    t_user = [[1.0, 0.0], [0.5, 0.5]]  # version-1 targets (M_1 on the current graph)
    t_item = [[0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]
    users, positives, negatives = [0, 0, 1], [1, 0, 2], [2, 2, 0]
    return b2, b1, z_user, z_item, t_user, t_item, users, positives, negatives


def _matvec(m, v):
    return [sum(a * b for a, b in zip(row, v, strict=True)) for row in m]


def _mean_sq(rows):
    return sum(x * x for r in rows for x in r) / sum(len(r) for r in rows)


def test_multi_step_loss_equals_hand_computation():
    b2, b1, z_user, z_item, t_user, t_item, users, positives, negatives = _alignment_example()
    # Hand computation over the batch rows, straight from the definition:
    # (1/k) Σ_j [ mean((B_{j+1}..B_{k-1} d_u)²) + mean(.. d_i ..) + mean(.. d_j ..) ], d = z_{k-1} - B_k z_k.
    d_u = [[t - m for t, m in zip(t_user[u], _matvec(b2, z_user[u]), strict=True)] for u in users]
    d_i = [[t - m for t, m in zip(t_item[i], _matvec(b2, z_item[i]), strict=True)] for i in positives]
    d_j = [[t - m for t, m in zip(t_item[j], _matvec(b2, z_item[j]), strict=True)] for j in negatives]
    term_1 = _mean_sq(d_u) + _mean_sq(d_i) + _mean_sq(d_j)  # space of version 1, normalised by D_1 = 2
    term_0 = sum(_mean_sq([_matvec(b1, d) for d in ds]) for ds in (d_u, d_i, d_j))  # version 0, D_0 = 1
    expected = (term_1 + term_0) / 2

    weight = _t(b2)
    mapped = (_t(z_user) @ weight.T, _t(z_item) @ weight.T)
    got = multi_step_alignment_loss(
        mapped,
        (_t(t_user), _t(t_item)),
        torch.tensor(users),
        torch.tensor(positives),
        torch.tensor(negatives),
        [_t(b1)],
    )
    assert float(got) == pytest.approx(expected, rel=1e-12)
    # Worked on paper: residuals u0 [0, 2], u1 [-1.5, .5], i0 [-3, 0], i1 [-1, 2], i2 [0, -1];
    # term_1 = 10.5/6 + 15/6 + 11/6 = 73/12; through B_1: 32.0625/3 + 18.5/3 + 10.25/3 = 973/48.
    assert expected == pytest.approx((73 / 12 + 973 / 48) / 2, rel=1e-12) and expected == pytest.approx(1265 / 96)

    single = single_step_alignment_loss(
        mapped, (_t(t_user), _t(t_item)), torch.tensor(users), torch.tensor(positives), torch.tensor(negatives)
    )
    assert float(single) == pytest.approx(term_1, rel=1e-12)
    mse = torch.nn.MSELoss()
    u, p, n = torch.tensor(users), torch.tensor(positives), torch.tensor(negatives)
    by_torch = mse(mapped[0][u], _t(t_user)[u]) + mse(mapped[1][p], _t(t_item)[p]) + mse(mapped[1][n], _t(t_item)[n])
    assert float(single) == pytest.approx(float(by_torch), rel=1e-12)
    # with no older transform the multi-step loss is the single-step loss (k = 1)
    assert float(multi_step_alignment_loss(mapped, (_t(t_user), _t(t_item)), u, p, n, [])) == pytest.approx(term_1)


def test_the_alignment_metric_is_the_chain_pushed_residual_in_one_quadratic_form():
    """metric_alignment_loss with a precomputed G equals the residual pushed through every frozen
    chain, space by space (the definition), in value and in gradient: float64, k = 4 spaces of
    different dimensions, repeated and never-drawn nodes."""
    gen = torch.Generator().manual_seed(3)
    dims = [3, 4, 6, 5]  # D_0..D_3: the chain B_1 (3x4), B_2 (4x6), B_3 (6x5) -> version 3's residual of dim 5
    older = [torch.randn(dims[j - 1], dims[j], generator=gen, dtype=torch.float64) for j in range(1, 4)]
    z_user, z_item = (torch.randn(n, 7, generator=gen, dtype=torch.float64) for n in (4, 6))
    t_user, t_item = (torch.randn(n, 5, generator=gen, dtype=torch.float64) for n in (4, 6))
    users, positives, negatives = torch.tensor([0, 2, 2, 1]), torch.tensor([5, 0, 1, 1]), torch.tensor([3, 3, 0, 5])

    def by_definition(weight):
        d_user, d_item = t_user - z_user @ weight.T, t_item - z_item @ weight.T
        total = 0.0
        for chain in [None, *range(len(older) - 1, -1, -1)]:
            if chain is not None:
                d_user, d_item = d_user @ older[chain].T, d_item @ older[chain].T
            rows = torch.cat([d_user[users], d_item[positives], d_item[negatives]])
            total = total + rows.pow(2).sum() / (len(users) * d_user.shape[1])
        return total / (len(older) + 1)

    weight = torch.randn(5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    expected = by_definition(weight)
    (grad_expected,) = torch.autograd.grad(expected, weight)
    metric = alignment_metric(older, 5)
    got = metric_alignment_loss(
        (z_user @ weight.T, z_item @ weight.T), (t_user, t_item), users, positives, negatives, metric
    )
    (grad_got,) = torch.autograd.grad(got, weight)
    assert float(got) == pytest.approx(float(expected), rel=1e-12)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-12, atol=1e-12)
    chained = multi_step_alignment_loss(
        (z_user @ weight.T, z_item @ weight.T), (t_user, t_item), users, positives, negatives, older
    )
    assert float(chained) == pytest.approx(float(expected), rel=1e-12)


def test_multi_step_gradient_reaches_only_the_new_transform():
    b2, b1, z_user, z_item, t_user, t_item, users, positives, negatives = _alignment_example()
    weight = _t(b2).requires_grad_(True)
    frozen = _t(b1)
    loss = multi_step_alignment_loss(
        (_t(z_user) @ weight.T, _t(z_item) @ weight.T),
        (_t(t_user), _t(t_item)),
        torch.tensor(users),
        torch.tensor(positives),
        torch.tensor(negatives),
        [frozen],
    )
    loss.backward()
    assert weight.grad is not None and float(weight.grad.abs().sum()) > 0
    assert frozen.grad is None


def test_sampler_is_user_uniform_and_never_draws_positives_as_negatives():
    # user 0 has 1 interaction, user 1 has 9: pairs are drawn per user, not per interaction
    user = np.array([0] + [1] * 9)
    item = np.array([0] + list(range(1, 10)))
    sampler = BPRSampler(user, item, num_items=12, rng=np.random.default_rng(0))
    counts = np.zeros(2)
    for _ in range(200):
        u, p, n = (t.numpy() for t in sampler.sample_epoch())
        assert len(u) == 10
        counts += np.bincount(u, minlength=2)
        assert np.all(p[u == 0] == 0) and np.all(np.isin(p[u == 1], np.arange(1, 10)))
        assert not np.any(n[u == 0] == 0) and not np.any(np.isin(n[u == 1], np.arange(1, 10)))
    assert counts[0] / counts.sum() == pytest.approx(0.5, abs=0.05)
    again = BPRSampler(user, item, num_items=12, rng=np.random.default_rng(0)).sample_epoch()
    first = BPRSampler(user, item, num_items=12, rng=np.random.default_rng(0)).sample_epoch()
    assert all(torch.equal(a, b) for a, b in zip(again, first, strict=True))


def test_several_negatives_per_pair_are_drawn_like_one_and_averaged_in_bpr():
    user = np.array([0] + [1] * 9)
    item = np.array([0] + list(range(1, 10)))
    u, p, n = (t.numpy() for t in BPRSampler(user, item, 12, np.random.default_rng(0)).sample_epoch(4))
    assert n.shape == (10, 4)
    assert not np.any(n[u == 0] == 0) and not np.any(np.isin(n[u == 1], np.arange(1, 10)))
    zu, zp = _t([[1.0, 0.0], [0.5, 0.5]]), _t([[2.0, 1.0], [0.0, 1.0]])
    zn = _t([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])  # (B=2, N=2, D=2)
    # pairs: row 0 pos 2 vs negs 0, 1; row 1 pos 0.5 vs negs 1, 0
    sp = [math.log1p(math.exp(x)) for x in (-2.0, -1.0, 0.5, -0.5)]
    l2 = 0.5 * ((1 + 0.5) + (5 + 1) + (1 + 1 + 2 + 0) / 2) / 2
    assert float(bpr_loss(zu, zp, zn, l2_weight=0.01)) == pytest.approx(sum(sp) / 4 + 0.01 * l2, abs=1e-12)
    one = _t([[0.0, 1.0], [1.0, 1.0]])
    assert float(bpr_loss(zu, zp, one.unsqueeze(1), 0.01)) == pytest.approx(float(bpr_loss(zu, zp, one, 0.01)))


@pytest.mark.parametrize("negatives", [1, 8])
def test_bpr_on_negative_indices_equals_bpr_on_gathered_negatives_in_value_and_gradients(negatives):
    """The training loop's loss (negatives as indices, no (B, N, D) gradient) is the paper's loss:
    same value and same gradients for the user rows, the positives and every item row, repeated
    negatives included (each occurrence counts)."""
    gen = torch.Generator().manual_seed(0)
    z_items0 = torch.randn(7, 5, dtype=torch.float64, generator=gen)
    zu0, zp0 = (
        torch.randn(6, 5, dtype=torch.float64, generator=gen),
        torch.randn(6, 5, dtype=torch.float64, generator=gen),
    )
    index = torch.randint(0, 5, (6, negatives), generator=gen)  # items 5 and 6 never drawn: zero gradient
    index[0, 0] = index[1, 0] = 3  # a repeat across pairs
    results = []
    for gathered in (False, True):
        z_items, zu, zp = (t.clone().requires_grad_() for t in (z_items0, zu0, zp0))
        if gathered:
            loss = bpr_loss_gathered(zu, zp, z_items, index if negatives > 1 else index[:, 0], 0.05)
        else:
            zn = z_items.index_select(0, index.reshape(-1)).view(6, negatives, 5)
            loss = bpr_loss(zu, zp, zn, 0.05)
        loss.backward()
        results.append((float(loss.detach()), zu.grad, zp.grad, z_items.grad))
    (ref_loss, *ref_grads), (loss, *grads) = results
    assert loss == pytest.approx(ref_loss, abs=1e-12)
    for ref, got in zip(ref_grads, grads, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    assert float(grads[2][5:].abs().max()) == 0.0


def _tiny_split():
    # users a, b; items x, y, z, w. Fractions k/6: train (<= 0.4) a-x, a-y, b-y; validation a-x, a-z, b-x, b-w.
    rows = [("a", "x"), ("a", "y"), ("b", "y"), ("a", "x"), ("a", "z"), ("b", "x"), ("b", "w")]
    users, items = zip(*rows, strict=True)
    ds = build_dataset(
        "tiny", users=np.array(users), items=np.array(items), ratings=np.ones(7), timestamps=np.arange(7), source="test"
    )
    return ds, split_version(ds, 0.4, 1.0)


def test_recall_masks_training_positives_and_averages_per_user():
    ds, split = _tiny_split()
    assert split.val_user.tolist() == [0, 0, 1, 1]  # a-x (again), a-z, b-x, b-w
    evaluator = RecallEvaluator(split, ks=(1, 2))
    # items x=0, y=1, z=2, w=3. Scores: user a: x 4, y 3, w 1, z 0; user b: y 9, w 5, x 0, z -1.
    z_user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_item = torch.tensor([[4.0, 0.0], [3.0, 9.0], [0.0, -1.0], [1.0, 5.0]])
    recall = evaluator.evaluate(z_user, z_item)
    # user a: truth {x, z}; x, y are training positives (masked) -> ranking w, z -> @1 0, @2 1/2 (x is never hit)
    # user b: truth {x, w}; y masked -> ranking w, x, z -> @1 1/2, @2 1
    assert recall == pytest.approx({1: (0 + 0.5) / 2, 2: (0.5 + 1) / 2})


def test_pinsage_layer_is_mean_aggregation_sage_with_shared_user_input():
    ds, split = _tiny_split()
    ds = ds.with_item_attributes({"g": AttributeGroup.from_tokens("g", [["p"], ["p", "q"], [], ["q"]])})
    graph = build_graph(ds, split)
    spec = ModelSpec.for_dataset("pinsage", 3, 1, ds)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    z_user, z_item = model(graph)

    bag = model.item_encoder.bags["g"].weight.detach()
    x_item = torch.stack([bag[0], (bag[0] + bag[1]) / 2, torch.zeros(3), bag[1]])  # mean bags, empty -> 0
    x = torch.cat([model.user_input.detach().expand(2, 3), x_item])
    # training edges a-x, a-y, b-y; a second a-x is in validation (not in the graph)
    neighbours = {0: [2, 3], 1: [3], 2: [0], 3: [0, 1], 4: [], 5: []}
    mean = torch.stack([x[n].mean(0) if n else torch.zeros(3) for n in neighbours.values()])
    layer = model.layers[0]
    h = mean @ layer.neighbours.weight.detach().T + layer.neighbours.bias.detach() + x @ layer.root.weight.detach().T
    norm = model.norms[0]
    expected = (h - norm.running_mean) / torch.sqrt(
        norm.running_var + norm.eps
    ) * norm.weight.detach() + norm.bias.detach()
    torch.testing.assert_close(torch.cat([z_user, z_item]).detach(), expected, rtol=1e-5, atol=1e-6)
    # users are inductive: two users with the same neighbourhood get the same embedding
    assert graph.num_users == 2 and graph.num_items == 4


def test_mf_model_covers_the_whole_dataset_and_refuses_larger_graphs():
    ds, split = _tiny_split()
    spec = ModelSpec.for_dataset("mf", 4, 0, ds)
    model = build_model(spec)
    z_user, z_item = model(build_graph(ds, split))
    assert z_user.shape == (2, 4) and z_item.shape == (4, 4)
    small = build_model(spec.model_copy(update={"max_items": 2}))
    with pytest.raises(ValueError, match="built for"):
        small(build_graph(ds, split))
