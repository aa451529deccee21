"""BackwardCompatibility (BC-Aligner in any loop) and fit-transform (post hoc B_k), on real catalogs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from feast_bc import Catalog, EntitySpec
from feast_bc.embeddings import matrix_to_list_array
from feast_bc.errors import FeastBCError, PublishRefusedError
from feast_bc.publish_gate import GateFile, write_gate_file
from training.backward_compat import BackwardCompatibility
from training.cli import main as training_main
from training.errors import TrainingError
from training.fit_transform import fit_for_catalog
from training.objectives import multi_step_alignment_loss, single_step_alignment_loss
from training.posthoc_fit import fit_backward_transform

ENTITY = EntitySpec(name="item", join_key="item_id", dtype="int64")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "locks" not in p.parts):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("multi_step", [True, False])
def test_loss_equals_the_built_in_alignment_loss(multi_step):
    rng = _rng()
    d0, d1, d2, n_users, n_items, batch = 6, 8, 10, 30, 40, 64
    b1 = rng.normal(size=(d0, d1)).astype(np.float32) / 3
    w = rng.normal(size=(d1, d2)).astype(np.float32) / 3
    t_user, t_item = (
        rng.normal(size=(n_users, d1)).astype(np.float32),
        rng.normal(size=(n_items, d1)).astype(np.float32),
    )
    z_user, z_item = torch.randn(n_users, d2), torch.randn(n_items, d2)
    users = torch.from_numpy(rng.integers(0, n_users, batch))
    pos, neg = torch.from_numpy(rng.integers(0, n_items, batch)), torch.from_numpy(rng.integers(0, n_items, batch))
    user_ids, item_ids = np.arange(100, 100 + n_users), np.arange(500, 500 + n_items)
    bc = BackwardCompatibility(
        {"user": (user_ids, t_user), "item": (item_ids, t_item)},
        new_dim=d2,
        older_transforms=[b1],
        lam=4.0,
        multi_step=multi_step,
        initial=w,
    )
    ours = (
        bc.loss(user_ids[users.numpy()], z_user[users], "user")
        + bc.loss(item_ids[pos.numpy()], z_item[pos], "item")
        + bc.loss(item_ids[neg.numpy()], z_item[neg], "item")
    )
    w_t = torch.from_numpy(w)
    mapped = (z_user @ w_t.T, z_item @ w_t.T)
    targets = (torch.from_numpy(t_user), torch.from_numpy(t_item))
    if multi_step:
        built_in = multi_step_alignment_loss(mapped, targets, users, pos, neg, [torch.from_numpy(b1)])
    else:
        built_in = single_step_alignment_loss(mapped, targets, users, pos, neg)
    assert float(ours) == pytest.approx(4.0 * float(built_in), rel=1e-5)
    assert bc.version == 2 and bc.matched == 3 * batch and bc.excluded == 0


def test_permuted_and_partially_overlapping_ids_give_the_same_loss():
    rng = _rng(1)
    ids = np.arange(50) * 7
    targets = rng.normal(size=(50, 4)).astype(np.float32)
    bc = BackwardCompatibility.from_arrays(ids, targets, new_dim=5, older_transforms=[rng.normal(size=(3, 4))])
    z = torch.randn(50, 5)
    aligned = bc.loss(ids, z)
    perm = rng.permutation(50)
    assert float(bc.loss(ids[perm], z[perm])) == pytest.approx(float(aligned), rel=1e-6)
    new_ids = np.array([1, 2, 3])  # not multiples of 7 except 0: all new
    mixed_ids = np.concatenate([ids[perm], new_ids])
    before = bc.excluded
    mixed = bc.loss(mixed_ids, torch.cat([z[perm], torch.randn(3, 5) * 100]))
    assert float(mixed) == pytest.approx(float(aligned), rel=1e-6)
    assert bc.excluded - before == 3
    assert float(bc.loss(new_ids, torch.randn(3, 5))) == 0.0


def test_the_loss_trains_b_and_the_model():
    rng = _rng(2)
    ids = np.arange(200)
    old = rng.normal(size=(200, 4)).astype(np.float32)
    true_b = rng.normal(size=(4, 6)).astype(np.float32)
    z = torch.nn.Parameter(torch.from_numpy(np.linalg.lstsq(true_b, old.T, rcond=None)[0].T.astype(np.float32)) + 0.5)
    bc = BackwardCompatibility.from_arrays(ids, old, new_dim=6, lam=1.0)
    optimizer = torch.optim.Adam([z, *bc.parameters()], lr=0.05)
    first = None
    for _ in range(300):
        loss = bc.loss(ids, z)
        first = first if first is not None else float(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.01 * first


def _publish_two_versions(catalog: Catalog, rng, n=60, dims=(4, 6)):
    ids = np.arange(n, dtype=np.int64)
    v0 = rng.normal(size=(n, dims[0])).astype(np.float32)
    b1 = rng.normal(size=(dims[0], dims[1])).astype(np.float32) / 2
    v1 = rng.normal(size=(n, dims[1])).astype(np.float32)
    catalog.publish("item_embedding", ids=ids, vectors=v0, entity=ENTITY)
    catalog.publish("item_embedding", ids=ids, vectors=v1, transform=b1)
    return ids, v0, v1, b1


def test_from_catalog_trains_against_the_latest_and_publishes_through_the_catalog(tmp_path):
    rng = _rng(3)
    catalog = Catalog.for_repo(tmp_path)
    ids, _, v1, b1 = _publish_two_versions(catalog, rng)
    bc = BackwardCompatibility.from_catalog(catalog, "item_embedding", new_dim=8)
    assert bc.version == 2 and len(bc.older()) == 1
    np.testing.assert_array_equal(bc.older()[0].numpy(), b1)
    z2 = torch.randn(len(ids) + 5, 8)  # five entities new in version 2
    all_ids = np.arange(len(ids) + 5, dtype=np.int64)
    assert float(bc.loss(all_ids[::-1].copy(), z2.flip(0))) > 0 and bc.excluded == 5
    records = bc.publish(catalog, {"item_embedding": (all_ids, z2.numpy())})
    assert records["item_embedding"].version == 2
    served_v0 = catalog.transform_vectors("item_embedding", z2.numpy(), 2, 0)
    np.testing.assert_allclose(served_v0, z2.numpy() @ bc.matrix().T @ b1.T, atol=1e-5)
    with pytest.raises(FeastBCError):  # version 2 exists now: a stale module cannot publish again
        bc.publish(catalog, {"item_embedding": (all_ids, z2.numpy())})


def test_bad_inputs_are_refused_and_change_nothing(tmp_path):
    rng = _rng(4)
    catalog = Catalog.for_repo(tmp_path)
    ids, _, _, _ = _publish_two_versions(catalog, rng)
    digest = _tree_digest(tmp_path)
    with pytest.raises(FeastBCError, match="no_such"):
        BackwardCompatibility.from_catalog(catalog, "no_such_family", new_dim=8)
    bc = BackwardCompatibility.from_catalog(catalog, "item_embedding", new_dim=8)
    with pytest.raises(TrainingError, match=r"\(n, 8\)"):
        bc.loss(ids, torch.randn(len(ids), 7))
    with pytest.raises(TrainingError, match="unknown family"):
        bc.loss(ids, torch.randn(len(ids), 8), family="user_embedding")
    with pytest.raises(TrainingError, match="NaN"):
        BackwardCompatibility.from_arrays(ids, np.full((len(ids), 4), np.nan), new_dim=8)
    with torch.no_grad():
        bc.transform.weight[0, 0] = float("nan")
    with pytest.raises(TrainingError, match="NaN"):
        bc.publish(catalog, {"item_embedding": (ids, rng.normal(size=(len(ids), 8)))})
    with pytest.raises(TrainingError, match="families this module aligned"):
        bc.publish(catalog, {"user_embedding": (ids, rng.normal(size=(len(ids), 8)))})
    assert _tree_digest(tmp_path) == digest


def test_closed_form_equals_numpy_least_squares_and_procrustes_is_orthogonal():
    rng = _rng(5)
    new = rng.normal(size=(300, 6))
    old = new @ rng.normal(size=(6, 5)) + 0.1 * rng.normal(size=(300, 5))
    expected = np.linalg.lstsq(new, old, rcond=None)[0].T
    np.testing.assert_allclose(fit_backward_transform(new, old, ridge=0.0), expected, atol=1e-5)
    rotation = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    square_old = new @ rotation.T
    b = fit_backward_transform(new, square_old, method="procrustes")
    np.testing.assert_allclose(b @ b.T, np.eye(6), atol=1e-5)
    np.testing.assert_allclose(b, rotation, atol=1e-5)
    with pytest.raises(TrainingError, match="equal dimensions"):
        fit_backward_transform(new, old, method="procrustes")
    sgd = fit_backward_transform(new, old, method="sgd", epochs=300, batch_size=64, learning_rate=0.02)
    optimum = ((old - new @ expected.T) ** 2).mean()
    assert ((old - new @ sgd.T) ** 2).mean() < 1.1 * optimum
    with pytest.raises(TrainingError, match="NaN"):
        fit_backward_transform(np.full_like(new, np.nan), old)
    with pytest.raises(TrainingError, match="unknown method"):
        fit_backward_transform(new, old, method="magic")


def _write_new(path: Path, ids, vectors) -> Path:
    pq.write_table(pa.table({"item_id": pa.array(ids), "embedding": matrix_to_list_array(np.asarray(vectors))}), path)
    return path


def test_fit_transform_cli_reports_then_publishes(tmp_path, capsys):
    rng = _rng(6)
    catalog = Catalog.for_repo(tmp_path)
    ids, _, v1, b1 = _publish_two_versions(catalog, rng)
    true_b = rng.normal(size=(6, 8)).astype(np.float32)
    v2 = np.linalg.lstsq(true_b, v1.T, rcond=None)[0].T.astype(np.float32)  # B v2 = v1 exactly
    new_file = _write_new(tmp_path / "v2.parquet", ids[::-1], v2[::-1])
    digest = _tree_digest(tmp_path / "bc_catalog")
    args = ["fit-transform", "--repo", str(tmp_path), "--family", "item_embedding", "--new", str(new_file)]
    assert training_main(args) == 0
    out = capsys.readouterr().out
    assert "fit on 60 entities" in out and "nothing published" in out and "v0" in out and "v1" in out
    assert _tree_digest(tmp_path / "bc_catalog") == digest
    result = fit_for_catalog(catalog, "item_embedding", ids, v2)
    assert all(s.relative < 1e-3 for s in result.shifts)
    assert training_main([*args, "--publish"]) == 0
    manifest = catalog.manifest("item_embedding")
    assert manifest.latest_version == 2 and "alignment_rel_v0" in manifest.latest.metrics
    np.testing.assert_allclose(catalog.transform_vectors("item_embedding", v2, 2, 0), v1 @ b1.T, atol=1e-4)


def test_fit_transform_metrics_meet_a_min_metric_gate_and_each_refusal_names_its_own_override(tmp_path, capsys):
    """Issue 25 (4): `fit-transform --metric` reports the version's metrics, so a `--min-metric` limit
    can pass (it always refused: "not measured"); a refusal names the override of the path used."""
    rng = _rng(8)
    catalog = Catalog.for_repo(tmp_path)
    ids, _, v1, _ = _publish_two_versions(catalog, rng)
    write_gate_file(catalog.root, GateFile(min_metrics={"val_recall@50": 0.3}))
    true_b = rng.normal(size=(6, 8)).astype(np.float32)
    v2 = np.linalg.lstsq(true_b, v1.T, rcond=None)[0].T.astype(np.float32)
    new_file = _write_new(tmp_path / "v2.parquet", ids, v2)
    args = ["fit-transform", "--repo", str(tmp_path), "--family", "item_embedding", "--new", str(new_file), "--publish"]
    capsys.readouterr()
    assert training_main([*args, "--metric", "val_recall@50=0.25"]) != 0
    err = capsys.readouterr().err
    assert "val_recall@50 0.25 < min_metrics" in err, err
    assert "Override: rerun this `fit-transform` with --force-publish" in err, err
    with pytest.raises(PublishRefusedError, match=r"not measured.*Override: force=True"):
        catalog.publish("item_embedding", ids=ids, vectors=v2, transform=true_b)  # the Python path
    assert catalog.manifest("item_embedding").latest_version == 1
    assert training_main([*args, "--metric", "val_recall@50=0.31", "hit@10=0.5"]) == 0
    latest = catalog.manifest("item_embedding").latest
    assert latest.version == 2 and latest.gate.passed
    assert latest.metrics["val_recall@50"] == 0.31 and latest.metrics["hit@10"] == 0.5
    capsys.readouterr()
    assert training_main([*args, "--metric", "recall=high"]) == 2
    assert "--metric expects NAME=NUMBER" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("case", "message"),
    [("nan", "NaN"), ("no-overlap", "no id"), ("family", "unknown_family"), ("dims", "equal dimensions")],
)
def test_fit_transform_cli_refuses_bad_input_and_changes_nothing(tmp_path, capsys, case, message):
    rng = _rng(7)
    catalog = Catalog.for_repo(tmp_path)
    ids, *_ = _publish_two_versions(catalog, rng)
    vectors = rng.normal(size=(len(ids), 8)).astype(np.float32)
    family, method = "item_embedding", "least-squares"
    if case == "nan":
        vectors[3, 2] = np.nan
    if case == "no-overlap":
        ids = ids + 10_000
    if case == "family":
        family = "unknown_family"
    if case == "dims":
        method = "procrustes"
    new_file = _write_new(tmp_path / "new.parquet", ids, vectors)
    digest = _tree_digest(tmp_path / "bc_catalog")
    code = training_main(
        [
            "fit-transform",
            "--repo",
            str(tmp_path),
            "--family",
            family,
            "--new",
            str(new_file),
            "--method",
            method,
            "--publish",
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert _tree_digest(tmp_path / "bc_catalog") == digest


def test_the_publish_gate_judges_the_module_and_fit_transform(tmp_path, capsys):
    rng = _rng(8)
    catalog = Catalog.for_repo(tmp_path)
    ids, *_ = _publish_two_versions(catalog, rng)
    write_gate_file(catalog.root, GateFile(max_alignment_error=0.05))
    digest = _tree_digest(tmp_path / "bc_catalog")
    bc = BackwardCompatibility.from_catalog(catalog, "item_embedding", new_dim=8)  # untrained B_2: far off
    vectors = rng.normal(size=(len(ids), 8)).astype(np.float32)
    with pytest.raises(PublishRefusedError, match="max_alignment_error"):
        bc.publish(catalog, {"item_embedding": (ids, vectors)})
    new_file = _write_new(tmp_path / "new.parquet", ids, vectors)
    args = ["fit-transform", "--repo", str(tmp_path), "--family", "item_embedding", "--new", str(new_file), "--publish"]
    assert training_main(args) == 2
    assert "refused" in capsys.readouterr().err
    assert _tree_digest(tmp_path / "bc_catalog") == digest
    assert training_main([*args, "--force-publish"]) == 0
    gate = catalog.manifest("item_embedding").latest.gate
    assert gate is not None and gate.forced and not gate.passed
