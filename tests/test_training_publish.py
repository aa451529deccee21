"""Persisted version chains and publishing: the CLI trains and publishes, Feast serves every pin."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO_ROOT, online_vectors, unique_project
from feast_bc import Catalog
from training.chain import VersionChain
from training.cli import main
from training.config import profile
from training.data import SyntheticData, TableData, load_dataset
from training.errors import StateError
from training.publish import ITEM_FAMILY, USER_FAMILY, publish_output
from training.strategies import make_strategy
from training.workdir import TrainingRun

SMALL = SyntheticData(num_users=150, num_items=100, seed=2)


def _cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "training", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{args} failed:\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    return proc


def _online(store, family: str, version: int, join_key: str, ids) -> np.ndarray:
    rows = online_vectors(store, family, version, join_key, ids)  # reads the pinned FeatureService <family>_v<version>
    assert all(r is not None for r in rows), f"{family} v{version}: missing online values"
    return np.asarray(rows, dtype=np.float64)


def test_cli_trains_and_publishes_and_feast_serves_every_pinned_version(tmp_path):
    work, repo, project = tmp_path / "work", tmp_path / "repo", unique_project("tr")
    first = _cli(
        "train",
        "--workdir",
        str(work),
        "--repo",
        str(repo),
        "--project",
        project,
        "--profile",
        "tiny",
        "--strategy",
        "bc-aligner",
        "--seed",
        "7",
        "--no-progress",
    )
    assert "published user_embedding, item_embedding as version 0" in first.stdout
    second = _cli("train", "--workdir", str(work), "--no-progress")  # the chain and repo are remembered
    assert "published user_embedding, item_embedding as version 1" in second.stdout

    run = TrainingRun.open(work)
    assert [v.published is not None for v in run.state.versions] == [True, True]
    v1 = run.output(1)
    catalog = Catalog.for_repo(repo)
    for family in (USER_FAMILY, ITEM_FAMILY):
        manifest = catalog.manifest(family)
        assert manifest.latest_version == 1 and manifest.versions[1].dim == run.config.dims[1]
        assert manifest.versions[1].metrics["val_recall@50"] == pytest.approx(v1.val_recall[50])
        assert catalog.transform(family, 1).weight.shape == v1.transform.shape
        np.testing.assert_array_equal(catalog.transform(family, 1).weight, v1.transform)  # one B_k for both

    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    for family, join_key, ids, latest, ver0 in (
        (USER_FAMILY, "user_id", v1.user_ids, v1.user_embeddings, v1.user_ver0),
        (ITEM_FAMILY, "item_id", v1.item_ids, v1.item_embeddings, v1.item_ver0),
    ):
        np.testing.assert_allclose(_online(store, family, 1, join_key, ids), latest, rtol=0, atol=1e-6)
        # version 0 is served as B_1 z_1: exactly the ver-0-compatible embeddings training computed
        np.testing.assert_allclose(_online(store, family, 0, join_key, ids), ver0, rtol=1e-5, atol=1e-5)
    new_users = v1.user_ids[run.output(0).split.num_users :]
    assert len(new_users) > 0  # users that arrived after version 0 are served at version 0 too
    assert _online(store, USER_FAMILY, 0, "user_id", new_users).shape == (len(new_users), run.config.dims[0])

    status = _cli("status", "--workdir", str(work)).stdout
    assert "strategy bc-aligner (lam 16)" in status and "2/5 versions trained" in status
    assert status.count(", published") == 2 and "not published" not in status


def test_a_reopened_work_directory_trains_the_same_next_version(tmp_path):
    config = profile("tiny")
    run = TrainingRun.create(tmp_path / "w", strategy=make_strategy("bc-aligner"), config=config, data=SMALL, seed=5)
    run.train_next_version()
    # A new process: nothing but the work directory.
    reopened = TrainingRun.open(tmp_path / "w")
    v1 = reopened.train_next_version(expected_version=1)
    in_memory = VersionChain(make_strategy("bc-aligner"), load_dataset(SMALL), config, seed=5)
    in_memory.train_next()
    m1 = in_memory.train_next()
    np.testing.assert_allclose(v1.user_embeddings, m1.user_embeddings, rtol=0, atol=1e-6)
    np.testing.assert_allclose(v1.transform, m1.transform, rtol=0, atol=1e-6)
    assert v1.alignment_error[0]["all"] == pytest.approx(m1.alignment_error[0]["all"], rel=1e-5)

    state_dir = tmp_path / "w" / "training_state"
    state = json.loads((state_dir / "state.json").read_text())
    assert state["strategy"] == {"name": "bc-aligner", "lam": 16.0}
    assert state["data"]["kind"] == "synthetic" and state["seed"] == 5 and len(state["versions"]) == 2
    weights = torch.load(state_dir / state["versions"][1]["checkpoint"]["path"], weights_only=True)
    assert weights["user_input"].shape == (1, config.dims[1])
    again = TrainingRun.open(tmp_path / "w").output(1)
    np.testing.assert_array_equal(again.user_ver0, v1.user_ver0)

    with pytest.raises(StateError, match="next version here is 2"):
        reopened.train_next_version(expected_version=4)
    with pytest.raises(StateError, match="already holds a training state"):
        TrainingRun.create(tmp_path / "w", strategy=make_strategy("nobc"), config=config, data=SMALL)
    checkpoint = state_dir / state["versions"][1]["checkpoint"]["path"]
    checkpoint.write_bytes(checkpoint.read_bytes()[:-8])
    with pytest.raises(StateError, match="does not match its recorded sha256"):
        TrainingRun.open(tmp_path / "w").train_next_version()


def test_changed_data_under_a_chain_is_refused(tmp_path):
    csv = tmp_path / "events.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"u": rng.integers(0, 40, 600), "i": rng.integers(0, 30, 600), "t": np.arange(600)}).to_csv(
        csv, index=False
    )
    data = TableData(path=csv, user="u", item="i", timestamp="t")
    run = TrainingRun.create(tmp_path / "w", strategy=make_strategy("nobc"), config=profile("tiny"), data=data)
    run.train_next_version()
    csv.write_text(csv.read_text().replace("\n5,", "\n6,", 1))
    with pytest.raises(StateError, match="changed since this chain started"):
        TrainingRun.open(tmp_path / "w").train_next_version()


def test_publishing_is_idempotent_and_refuses_foreign_versions(tmp_path):
    data = load_dataset(SyntheticData(num_users=80, num_items=60, seed=3, string_ids=True))
    chain = VersionChain(make_strategy("nobc"), data, profile("tiny"))
    v0 = chain.train_next()
    first = publish_output(v0, tmp_path / "repo", apply=False)
    assert first.published == [USER_FAMILY, ITEM_FAMILY] and first.skipped == []
    again = publish_output(v0, tmp_path / "repo", apply=False)  # e.g. a retry after a failed apply
    assert again.published == [] and again.skipped == [USER_FAMILY, ITEM_FAMILY]
    manifest = Catalog.for_repo(tmp_path / "repo").manifest(USER_FAMILY)
    assert manifest.entity.dtype == "string" and manifest.entity.join_key == "user_id"
    other = VersionChain(make_strategy("nobc"), data, profile("tiny"), seed=99).train_next()
    with pytest.raises(StateError, match="already has a version 0 with other vectors"):
        publish_output(other, tmp_path / "repo", apply=False)


def test_cli_refusals_exit_2_with_one_line(tmp_path, capsys):
    work = str(tmp_path / "w")
    if not torch.cuda.is_available():
        assert main(["train", "--workdir", work, "--device", "cuda", "--no-publish"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--workdir",
                work,
                "--profile",
                "tiny",
                "--data",
                "synthetic",
                "--no-publish",
                "--no-progress",
                "--epochs",
                "2",
                "--eval-every",
                "1",
                "--select-after",
                "1",
            ]
        )
        == 0
    )
    assert main(["train", "--workdir", work, "--strategy", "nobc", "--no-publish"]) == 2
    assert "drop --strategy" in capsys.readouterr().err
    assert (
        main(["train", "--workdir", str(tmp_path / "x"), "--profile", "tiny", "--epochs", "3", "--select-after", "3"])
        == 2
    )
    assert "select_after_epoch (3) must be below epochs (3)" in capsys.readouterr().err
    assert main(["train", "--workdir", str(tmp_path / "y"), "--data", "amazon-2018"]) == 2
    assert "needs --data-path" in capsys.readouterr().err
    assert main(["publish", "--workdir", work]) == 2
    assert "no repo to publish into" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--workdir", work, "--strategy", "no-such"])
