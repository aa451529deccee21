"""Issue 22 (reliability III): operator sequences that left pins wrong while `feast-bc status` said OK.

Every test reproduces a case with the real Feast CLI (subprocesses) on SQLite and/or Redis, checks
that the online audit (`feast-bc audit`, and `status`, which runs it) sees what a consumer reads,
and that the fixed behaviour serves the numpy chain or refuses with one clear line.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import (
    assert_online_matches,
    delete_project_keys,
    publish_users_and_items,
    redis_url,
    run_cli,
    unique_project,
)
from feast_bc import Catalog, EntitySpec
from feast_bc.audit import audit_repo
from feast_bc.repo import apply, init_repo, redis_url_to_connection_string
from feast_bc.status import repo_status

SQLITE_BLOCK = "  type: sqlite\n  path: data/online_store.db"


def _end(seconds: float = 5) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def _end_dt(seconds: float = 5) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _apply_and_materialize(repo, yaml: str = "feature_store.yaml", *, apply_first: bool = True):
    """Setup steps in-process (what `feast apply` + `feast materialize-incremental` do, without two
    CLI start-ups); the steps a case is about run through the CLI."""
    if apply_first:
        apply(repo, fs_yaml_file=repo / yaml)
    _store(repo, yaml).materialize_incremental(_end_dt())


def _store(repo, yaml="feature_store.yaml"):
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo), fs_yaml_file=repo / yaml)


def _redis_block() -> str:
    return f'  type: redis\n  connection_string: "{redis_url_to_connection_string(redis_url())}"'


def _publish_next(fams, catalog, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for fam in fams.values():
        fam.publish_next(catalog, rng)


def _kinds(report) -> set[tuple[str, str, int | None, str]]:
    return {(f.profile, f.family, f.version, f.kind) for f in report.findings}


def test_materialize_incremental_between_publish_and_apply_then_after_apply_updates_every_pin(tmp_path):
    """Case 6: `materialize-incremental` between publish and apply recorded an interval past the new
    version's publish time, so after `feast apply` the next incremental run wrote nothing into the
    older pins -- they kept values from the previous latest, and status said OK."""
    repo = init_repo(tmp_path / "repo", project=unique_project("seq6"))
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=1)
    _apply_and_materialize(repo)
    _publish_next(fams, catalog, seed=1)
    _store(repo).materialize_incremental(_end_dt())  # the registry still serves v0 as latest
    report = audit_repo(repo, sample=16)
    assert ("feature_store.yaml", "item_embedding", 0, "stale") in _kinds(report), report.findings
    stale = next(f for f in report.findings if f.kind == "stale")
    assert "computed from version 0, not from the latest 1" in stale.detail and "apply" in stale.repair
    status = run_cli(["feast-bc", "status", "--repo", str(repo)], check=False)
    assert status.returncode == 2 and "online audit" in status.stdout, status.stdout

    run_cli(["feast", "apply"], cwd=repo)
    out = run_cli(["feast", "materialize-incremental", _end()], cwd=repo)
    assert_online_matches(_store(repo), fams)
    assert "lacks version 1's values" in out.stderr + out.stdout
    assert audit_repo(repo, sample=16).ok
    assert repo_status(repo).ok


@pytest.mark.usefixtures("redis_available")
def test_a_second_profile_sharing_the_registry_materializes_its_own_store(tmp_path):
    """Case 5: a second profile (Redis) sharing the registry file of the SQLite one: the interval
    the SQLite run recorded made the Redis profile's `materialize-incremental` write 0 rows."""
    project = unique_project("seq5")
    repo = init_repo(tmp_path / "repo", project=project)
    text = (repo / "feature_store.yaml").read_text()
    assert SQLITE_BLOCK in text
    (repo / "feature_store.prod.yaml").write_text(text.replace(SQLITE_BLOCK, _redis_block()))
    try:
        catalog = Catalog.for_repo(repo)
        fams = publish_users_and_items(catalog, versions=1)
        _apply_and_materialize(repo)
        _apply_and_materialize(repo, "feature_store.prod.yaml", apply_first=False)
        _publish_next(fams, catalog, seed=2)
        _apply_and_materialize(repo)
        run_cli(["feast", "-f", "feature_store.prod.yaml", "materialize-incremental", _end()], cwd=repo)
        for yaml in ("feature_store.yaml", "feature_store.prod.yaml"):
            assert_online_matches(_store(repo, yaml), fams)
        report = audit_repo(repo, sample=16)
        assert report.ok, report.findings
        assert {c.profile for c in report.checked} == {"feature_store.yaml", "feature_store.prod.yaml"}
    finally:
        delete_project_keys(redis_url(), project)


@pytest.mark.usefixtures("redis_available")
def test_online_store_swapped_under_the_registry_gets_materialized(tmp_path):
    """Case 7: the online store edited sqlite -> redis in feature_store.yaml, `feast apply`,
    `materialize-incremental`: 0 rows, every pin None, status OK."""
    project = unique_project("seq7")
    repo = init_repo(tmp_path / "repo", project=project)
    try:
        catalog = Catalog.for_repo(repo)
        fams = publish_users_and_items(catalog, versions=2)
        _apply_and_materialize(repo)
        yaml = repo / "feature_store.yaml"
        yaml.write_text(yaml.read_text().replace(SQLITE_BLOCK, _redis_block()))
        apply(repo)
        report = audit_repo(repo, sample=8)
        assert {f.kind for f in report.findings} == {"missing"}, report.findings
        assert len(report.findings) == 4  # 2 families x 2 pins, all None on the new store
        run_cli(["feast", "materialize-incremental", _end()], cwd=repo)
        assert_online_matches(_store(repo), fams)
        assert audit_repo(repo, sample=8).ok
    finally:
        delete_project_keys(redis_url(), project)


def test_materialize_ending_before_the_publish_says_so_and_the_audit_reports_it(tmp_path):
    """Case 6: `feast materialize` with END before the latest's publish wrote nothing for it and
    said nothing, leaving the pins stale (or empty) while status said OK. Feast's window rule stays
    (nothing of a later publish is written), but the run names the fix and the audit sees the pins."""
    repo = init_repo(tmp_path / "repo", project=unique_project("seq6b"))
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=1)
    _apply_and_materialize(repo)
    before = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    _publish_next(fams, catalog, seed=3)
    apply(repo)
    proc = run_cli(["feast", "materialize", "2000-01-01T00:00:00", before], cwd=repo)
    said = proc.stderr + proc.stdout
    assert "after this materialization's end" in said and "materialize-incremental" in said, said
    status = repo_status(repo)
    assert not status.ok and any("stale" in p for p in status.problems), status.problems
    kinds = {(f.family, f.version, f.kind) for f in audit_repo(repo, sample=8).findings}
    assert ("item_embedding", 0, "stale") in kinds and ("item_embedding", 1, "missing") in kinds, kinds
    run_cli(["feast", "materialize-incremental", _end()], cwd=repo)
    assert_online_matches(_store(repo), fams)
    assert audit_repo(repo, sample=8).ok


def test_a_publish_from_a_clock_ahead_is_caught_at_materialize_and_not_inherited(tmp_path, monkeypatch):
    """Case 4: a publisher clock one hour fast: materialize wrote nothing for it and exited 0; the
    next publishes inherited the skewed time."""
    import feast_bc.catalog.publishing as publishing

    repo = init_repo(tmp_path / "repo", project=unique_project("seq4"))
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=1)
    _apply_and_materialize(repo)
    real = publishing.next_timestamp
    monkeypatch.setattr(publishing, "next_timestamp", lambda current: real(current) + timedelta(hours=1))
    _publish_next(fams, catalog, seed=4)  # the fast publisher
    monkeypatch.setattr(publishing, "next_timestamp", real)
    apply(repo)
    proc = run_cli(["feast", "materialize-incremental", _end()], cwd=repo, check=False)
    assert proc.returncode != 0 and "in the future" in proc.stderr and "clock" in proc.stderr, proc.stderr
    assert not audit_repo(repo, sample=8).ok
    with pytest.raises(Exception, match="ahead of this machine's clock"):
        _publish_next(fams, catalog, seed=5)  # a correct clock now: refused, not stamped in the future
    assert catalog.manifest("item_embedding").latest_version == 1


def test_ids_left_out_of_a_new_version_are_refused_and_the_audit_sees_them(tmp_path, monkeypatch):
    """Case 2: v0 ids 0-999, v1 ids 500-1499: the v0 pin kept serving the old vectors of ids
    0-499 while `feast-bc export --version 0` had none."""
    import feast_bc.catalog.publishing as publishing

    repo = init_repo(tmp_path / "repo", project=unique_project("seq2"))
    catalog = Catalog.for_repo(repo)
    rng = np.random.default_rng(0)
    entity = EntitySpec(name="item", join_key="item_id")
    catalog.publish("item_embedding", ids=np.arange(1000), vectors=rng.normal(size=(1000, 8)), entity=entity)
    _apply_and_materialize(repo)
    b = rng.normal(size=(8, 12)).astype(np.float32)
    with pytest.raises(Exception, match="lacks 500 of the 1000 ids of version 0"):
        catalog.publish("item_embedding", ids=np.arange(500, 1500), vectors=rng.normal(size=(1000, 12)), transform=b)
    assert catalog.manifest("item_embedding").latest_version == 0
    # the state it used to leave, built by skipping the check: the audit must see it
    monkeypatch.setattr(publishing, "refuse_dropped_ids", lambda *a: None)
    catalog.publish("item_embedding", ids=np.arange(500, 1500), vectors=rng.normal(size=(1000, 12)), transform=b)
    _apply_and_materialize(repo)
    report = audit_repo(repo, sample=32)
    extra = [f for f in report.findings if f.kind == "extra"]
    assert {f.version for f in extra} == {0}, report.findings  # v1 never had them: None there
    assert all(int(i) < 500 for i in extra[0].examples)
    proc = run_cli(["feast-bc", "audit", "--repo", str(repo), "--json"], check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["findings"], proc.stdout


def test_string_ids_are_compared_whole_by_the_gate():
    """Case 9: the gate cast the old ids to the new ids' width, so 'aa,bb,cc' vs 'a,b,c' matched."""
    import tempfile

    from feast_bc.publish_gate import alignment_errors
    from feast_bc.transforms import LinearTransform

    with tempfile.TemporaryDirectory() as tmp:
        catalog = Catalog(tmp + "/bc_catalog")
        entity = EntitySpec(name="doc", join_key="doc_id", dtype="string")
        rng = np.random.default_rng(0)
        catalog.publish("doc_embedding", ids=["aa", "bb", "cc"], vectors=rng.normal(size=(3, 4)), entity=entity)
        manifest = catalog.manifest("doc_embedding")
        errors = alignment_errors(
            catalog,
            "doc_embedding",
            manifest,
            np.asarray(["a", "b", "c"]),
            rng.normal(size=(3, 4)).astype(np.float32),
            LinearTransform(np.eye(4, dtype=np.float32)),
        )
        assert errors == {0: (None, "no entity in common with the current latest")}


def test_fit_transform_refuses_uint64_ids_beyond_int64(tmp_path):
    """Case 8: `fit-transform --publish` with uint64 ids > 2^63 published them as negative ids."""
    from training.errors import DatasetError
    from training.fit_transform import fit_for_catalog

    catalog = Catalog(tmp_path / "bc_catalog")
    rng = np.random.default_rng(0)
    catalog.publish(
        "item_embedding",
        ids=np.arange(4),
        vectors=rng.normal(size=(4, 3)),
        entity=EntitySpec(name="item", join_key="item_id"),
    )
    ids = np.asarray([0, 1, 2, 2**63 + 7], dtype=np.uint64)
    with pytest.raises(DatasetError, match="do not fit .* signed 64-bit join key"):
        fit_for_catalog(catalog, "item_embedding", ids, rng.normal(size=(4, 3)))


def _one_line_refusal(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("feast-bc: error: "), proc.stderr
    return lines[0]


def test_cli_refuses_what_it_used_to_accept_or_crash_on(tmp_path):
    """Exit 0 after damage or silence (init over a customised yaml, gate/drop-family of a typo,
    verify of a missing repo) and tracebacks (bad gate limits, export to a directory or from a
    missing ids file): each is one line and exit 2, nothing written."""
    repo = init_repo(tmp_path / "repo", project=unique_project("cli"))
    catalog = Catalog.for_repo(repo)
    publish_users_and_items(catalog, versions=1)
    yaml = repo / "feature_store.yaml"
    yaml.write_text(yaml.read_text() + "# customised by the operator\n")
    custom = yaml.read_bytes()
    line = _one_line_refusal(run_cli(["feast-bc", "init", str(repo)], check=False))
    assert "feature_store.yaml" in line and "--force" in line
    assert yaml.read_bytes() == custom
    assert run_cli(["feast-bc", "init", str(repo), "--force"], check=False).returncode == 0
    assert yaml.read_bytes() != custom

    line = _one_line_refusal(
        run_cli(
            ["feast-bc", "gate", "--repo", str(repo), "--family", "item_embedidng", "--max-alignment-error", "0.3"],
            check=False,
        )
    )
    assert "item_embedidng" in line and "item_embedding" in line
    assert not (catalog.root / "publish_gate.json").exists()
    for bad in ("-1", "nan", "inf"):
        line = _one_line_refusal(
            run_cli(["feast-bc", "gate", "--repo", str(repo), "--max-alignment-error", bad], check=False)
        )
        assert "max_alignment_error" in line, line
    assert not (catalog.root / "publish_gate.json").exists()

    line = _one_line_refusal(
        run_cli(["feast-bc", "drop-family", "--repo", str(repo), "--family", "nosuch"], check=False)
    )
    assert "nosuch" in line
    assert catalog.dropped_families() == {}
    _one_line_refusal(run_cli(["feast-bc", "verify", "--repo", str(tmp_path / "nonexistent")], check=False))
    _one_line_refusal(run_cli(["feast-bc", "status", "--repo", str(tmp_path / "nonexistent")], check=False))

    out_dir = tmp_path / "outdir"
    out_dir.mkdir()
    args = ["feast-bc", "export", "--repo", str(repo), "--family", "item_embedding", "--version", "0"]
    line = _one_line_refusal(run_cli([*args, "--out", str(out_dir)], check=False))
    assert "is a directory" in line
    line = _one_line_refusal(
        run_cli([*args, "--out", str(tmp_path / "v.parquet"), "--ids-file", str(tmp_path / "no.txt")], check=False)
    )
    assert "no.txt" in line
    assert list(out_dir.iterdir()) == [] and not (tmp_path / "v.parquet").exists()


def test_batch_rows_zero_is_refused_by_feast_config(tmp_path):
    """`batch_rows: 0` ended in a traceback inside the pass; the engine's config refuses it."""
    from pydantic import ValidationError

    from feast_bc.engine import BCEngineConfig

    with pytest.raises(ValidationError, match="batch_rows"):
        BCEngineConfig(batch_rows=0)
    with pytest.raises(ValidationError, match="transform_threads"):
        BCEngineConfig(transform_threads=0)


def test_a_forced_publish_of_two_families_validates_both_before_writing_either(tmp_path):
    """Case 13: `force=True` with two families, the second invalid (NaN): the first was published,
    the second not, and `from_catalog` then refused ("different versions")."""
    from feast_bc.errors import NonFiniteError
    from training.publish import publish_together

    catalog = Catalog(tmp_path / "bc_catalog")
    rng = np.random.default_rng(0)
    ids = np.arange(10)
    for fam, ent in (("user_embedding", "user"), ("item_embedding", "item")):
        catalog.publish(
            fam, ids=ids, vectors=rng.normal(size=(10, 4)), entity=EntitySpec(name=ent, join_key=f"{ent}_id")
        )
    bad = rng.normal(size=(10, 6))
    bad[3, 2] = np.nan
    entries = [
        ("user_embedding", None, ids, rng.normal(size=(10, 6)), {}),
        ("item_embedding", None, ids, bad, {}),
    ]
    with pytest.raises(NonFiniteError):
        publish_together(catalog, 1, entries, rng.normal(size=(4, 6)).astype(np.float32), force=True)
    assert [catalog.manifest(f).latest_version for f in ("user_embedding", "item_embedding")] == [0, 0]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_late_materialization_of_the_previous_latest_never_puts_old_values_back(tmp_path, backend, request):
    """Case 3: a slow materialize (started from the registry of version k-1) overlapping publish +
    apply + a materialize of version k, finishing last: on SQLite both exited 0 and the pins held
    values derived from the previous latest (Redis refused, saying "restored from backup").
    Reproduced deterministically: the late run is the engine run with the views as the registry held
    them before the new apply. The old latest's view reads a file the catalog no longer names: refused
    before writing (`feast_bc.latest_guard`) on both stores; the derived view reads the new latest
    through the current registry and is written as it should be."""
    from feast.infra.common.materialization_job import MaterializationTask

    from feast_bc.errors import LatestSupersededError

    if backend == "redis":
        request.getfixturevalue("redis_available")
    project = unique_project("seq3")
    url = redis_url() if backend == "redis" else None
    repo = init_repo(tmp_path / "repo", project=project, online_store=backend, redis_url=url)
    try:
        catalog = Catalog.for_repo(repo)
        fams = publish_users_and_items(catalog, versions=2)
        _apply_and_materialize(repo)
        old = _store(repo)
        old_views = [old.registry.get_any_feature_view(f"item_embedding_bc{v}", project) for v in (0, 1)]
        time.sleep(1.1)  # SQLite's online_read returns whole seconds (the post-pass probe compares by the second)
        _publish_next(fams, catalog, seed=6)
        _apply_and_materialize(repo)
        store = _store(repo)
        start = datetime(2000, 1, 1, tzinfo=UTC)
        tasks = [
            MaterializationTask(project=project, feature_view=v, start_time=start, end_time=datetime.now(UTC))
            for v in old_views
        ]
        jobs = store._get_provider().batch_engine.materialize(store.registry, tasks)
        errors = [j.error() for j in jobs]
        assert errors[0] is None and isinstance(errors[1], LatestSupersededError), errors
        assert "Nothing was written" in str(errors[1]) and "registry reads v0002" in str(errors[1]), errors[1]
        assert_online_matches(_store(repo), fams)
        assert audit_repo(repo, sample=16).ok
    finally:
        if backend == "redis":
            delete_project_keys(redis_url(), project)


def test_a_publish_while_a_sqlite_batch_waits_for_the_write_lock_stores_nothing_of_it(tmp_path):
    """Case 3, the race itself on SQLite: a materialization's batch waits for the database's write
    lock (another connection holds it, as a concurrent materialization's batch does); a new version
    is published and applied meanwhile, then the lock is let go. The batch must not be stored: the
    SQLite writer checks catalog and registry after taking the lock (`feast_bc.latest_guard`), so a
    check that passed before the apply cannot let a batch land after a newer run's. In process (a
    real Feast SQLite store, registry, catalog and publish; the registry half of `feast apply`) so that
    publish and apply fall between "waiting" and "lock taken"."""
    import sqlite3
    import threading

    from feast import BatchFeatureView

    from feast_bc.errors import LatestSupersededError
    from feast_bc.feast_objects import feast_objects
    from feast_bc.latest_guard import LatestGuard
    from feast_bc.materialize import latest_file, registry_file_reader
    from feast_bc.online_writers import SqliteBulkWriter, StoreTarget, ViewTarget

    project = unique_project("seq3r")
    repo = init_repo(tmp_path / "repo", project=project)
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=2)
    apply(repo)  # nothing materialized: any row the batch stores is visible below
    store = _store(repo)
    view = store.registry.get_any_feature_view("item_embedding_bc1", project)
    path = latest_file(store.config, view, store.registry, project)
    guard = LatestGuard(
        catalog, "item_embedding", path, registry_file_reader(store.config, store.registry, view, project)
    )
    writer = SqliteBulkWriter(
        StoreTarget(store.config, store._get_provider().online_store, "item_id", "int64"),
        ViewTarget(view, 10),
        guard=guard.check,
    )
    writer.conn.execute("PRAGMA busy_timeout = 60000")  # Feast's connection waits 5 s: room for the apply
    fam = fams["item_embedding"]
    outcome: list = []

    def late_batch():
        try:
            with writer:
                writer.write(fam.ids[1], fam.vectors[1], 1, datetime.now(UTC))
            outcome.append("stored")
        except Exception as exc:  # noqa: BLE001 - the outcome is the assertion
            outcome.append(exc)

    db_path = repo / "data" / "online_store.db"
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    thread = threading.Thread(target=late_batch)
    try:
        thread.start()
        time.sleep(0.5)  # the batch is waiting for the lock
        _publish_next(fams, catalog, seed=9)
        time.sleep(0.2)
        assert thread.is_alive() and not outcome  # a publish alone does not stop it (the registry serves v1)
        # the registry half of `feast apply` (its other half creates online tables: the lock is held)
        for obj in feast_objects(repo).values():
            if isinstance(obj, BatchFeatureView):
                store.registry.apply_feature_view(obj, project, commit=True)
    finally:
        lock.execute("COMMIT")
        lock.close()
    thread.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], LatestSupersededError), outcome
    assert "while it ran" in str(outcome[0]) and "registry reads v0002" in str(outcome[0]), outcome[0]
    with sqlite3.connect(db_path) as check:
        tables = [t for (t,) in check.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        stored = {t: check.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    assert tables and not any(stored.values()), stored


def test_fit_transform_bad_arguments_are_one_line_errors(tmp_path):
    """`fit-transform --method sgd --epochs 0` and `--vector-column <non-list column>` ended in tracebacks."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = init_repo(tmp_path / "repo", project=unique_project("ft"))
    catalog = Catalog.for_repo(repo)
    rng = np.random.default_rng(0)
    catalog.publish(
        "item_embedding",
        ids=np.arange(20),
        vectors=rng.normal(size=(20, 4)),
        entity=EntitySpec(name="item", join_key="item_id"),
    )
    new = tmp_path / "new.parquet"
    pq.write_table(
        pa.table(
            {"item_id": np.arange(20), "embedding": rng.normal(size=(20, 6)).tolist(), "score": rng.normal(size=20)}
        ),
        new,
    )
    base = [
        sys.executable,
        "-m",
        "training",
        "fit-transform",
        "--repo",
        str(repo),
        "--family",
        "item_embedding",
        "--new",
        str(new),
    ]
    for extra, needle in (
        (["--method", "sgd", "--epochs", "0"], "--epochs"),
        (["--vector-column", "score"], "not vectors"),
    ):
        proc = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert needle in proc.stderr, proc.stderr
    assert catalog.manifest("item_embedding").latest_version == 0


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_copied_repo_is_refused_until_it_has_its_own_identity_and_a_moved_one_applies(tmp_path, backend, request):
    """Cases 10 and 11: `cp -a` of a repo, then `feast apply` in the copy dropped the ORIGINAL's SQLite
    online tables (Feast moved its infra to the copy's path); on Redis a version published and
    materialized in the copy overwrote what the original's pins serve (same project, same keys)."""
    import shutil

    if backend == "redis":
        request.getfixturevalue("redis_available")
    project = unique_project("cp")
    url = redis_url() if backend == "redis" else None
    original = init_repo(tmp_path / "a" / "repo", project=project, online_store=backend, redis_url=url)
    projects = [project]
    try:
        fams = publish_users_and_items(Catalog.for_repo(original), versions=2)
        run_cli(["feast", "apply"], cwd=original)  # the CLI records Feast's infra (SQLite paths) in the registry
        _apply_and_materialize(original, apply_first=False)
        copy = tmp_path / "b" / "repo"
        shutil.copytree(original, copy, symlinks=True)
        proc = run_cli(["feast", "apply"], cwd=copy, check=False)
        assert proc.returncode != 0 and "CopiedRepoError" in proc.stderr and "is a copy of it" in proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert_online_matches(_store(original), fams)  # untouched: tables and keys
        # what the message says: its own registry and project
        for yaml in copy.glob("feature_store*.yaml"):
            yaml.write_text(yaml.read_text().replace(f"project: {project}", f"project: {project}c"))
        projects.append(project + "c")
        for registry in (copy / "data").glob("registry*.db"):
            registry.unlink()
        _apply_and_materialize(copy)
        assert_online_matches(_store(copy), fams)
        assert_online_matches(_store(original), fams)
        assert audit_repo(original, sample=8).ok and audit_repo(copy, sample=8).ok
        # a moved repo (its old directory gone) applies and serves as it is
        moved = tmp_path / "c" / "repo"
        shutil.move(str(original), moved)
        _apply_and_materialize(moved)
        assert_online_matches(_store(moved), fams)
    finally:
        if backend == "redis":
            for p in projects:
                delete_project_keys(redis_url(), p)


@pytest.mark.usefixtures("redis_available")
def test_a_registry_write_cut_short_keeps_the_previous_registry(tmp_path):
    """Case 12: the registry on a full volume: `feast apply` exited 0 leaving a truncated registry
    (`DecodeError ... Wire format was corrupt` on every read). Reproduced for real with a file size
    limit (RLIMIT_FSIZE, SIGXFSZ ignored: the kernel cuts the write short, then refuses it -- as a
    full volume does) between the old registry's size and the new one's; a Redis repo, so the
    registry is the only file `feast apply` writes."""
    import resource
    import signal
    import subprocess

    from conftest import VENV_BIN

    project = unique_project("reg")
    repo = init_repo(tmp_path / "repo", project=project, online_store="redis", redis_url=redis_url())
    try:
        catalog = Catalog.for_repo(repo)
        fams = publish_users_and_items(catalog, versions=2)
        # The team's own definitions beside feast_bc's (the CLI applies every file of the repo): a
        # long description makes the registry outgrow the 1 MiB file Feast's metrics client creates
        # at start-up, so a limit can sit between the old registry's size and the new one's.
        own = repo / "own_definitions.py"
        entity = 'from feast import Entity\nnotes = Entity(name="notes", join_keys=["note_id"], description="x" * {})\n'
        own.write_text(entity.format(1_300_000))
        run_cli(["feast", "apply"], cwd=repo)
        registry = repo / "data" / "registry_redis.db"  # the Redis profile's registry name
        before = registry.read_bytes()
        own.write_text(entity.format(2_600_000))
        limit = len(before) + 512 * 1024

        def limited():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        proc = subprocess.run(
            [str(VENV_BIN / "feast"), "apply"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=limited,
        )
        assert proc.returncode != 0, proc.stdout
        assert "RegistryWriteError" in proc.stderr and "previous registry is kept" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert registry.read_bytes() == before  # intact, readable
        assert not list(registry.parent.glob(".registry_redis.db.*"))  # no temporary left behind
        run_cli(["feast", "apply"], cwd=repo)  # space back: applies
        _store(repo).materialize_incremental(_end_dt())
        assert_online_matches(_store(repo), fams)
        assert audit_repo(repo, sample=8).ok
    finally:
        delete_project_keys(redis_url(), project)


def test_sqlite_locked_full_or_missing_tables_are_one_line_errors_and_a_rerun_completes(tmp_path):
    """`database is locked`, `database or disk is full` and `no such table` during `feast materialize`
    ended in tracebacks. Each is produced for real: another connection holding a write lock, a file
    size limit (RLIMIT_FSIZE, SIGXFSZ ignored) on the materializing process, a table dropped under
    the registry."""
    import resource
    import signal
    import sqlite3
    import subprocess

    from conftest import VENV_BIN

    repo = init_repo(tmp_path / "repo", project=unique_project("sql"))
    catalog = Catalog.for_repo(repo)
    rng = np.random.default_rng(0)
    ids, d = np.arange(4000), 64  # a database past the 1 MiB file Feast's metrics client creates at start-up
    entity = EntitySpec(name="item", join_key="item_id")
    catalog.publish("item_embedding", ids=ids, vectors=rng.normal(size=(4000, d)), entity=entity)
    catalog.publish(
        "item_embedding", ids=ids, vectors=rng.normal(size=(4000, d)), transform=rng.normal(size=(d, d)) / d
    )
    _apply_and_materialize(repo)
    db = repo / "data" / "online_store.db"
    materialize = ["feast", "materialize", "2000-01-01T00:00:00", _end()]
    catalog.publish(
        "item_embedding", ids=ids, vectors=rng.normal(size=(4000, d)), transform=rng.normal(size=(d, d)) / d
    )
    apply(repo)

    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        proc = run_cli(materialize, cwd=repo, check=False)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "OnlineStoreUnavailableError" in proc.stderr and "is locked by another process" in proc.stderr

    limit = db.stat().st_size + 64 * 1024  # a third view's 4000 rows need ~1 MB more

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [str(VENV_BIN / "feast"), *materialize[1:]],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "OnlineStoreFullError" in proc.stderr and "could not write" in proc.stderr, proc.stderr

    run_cli(materialize, cwd=repo)  # room again: completes
    assert audit_repo(repo, sample=16).ok

    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        conn.execute(f'DROP TABLE "{next(n for n in names if n.endswith("item_embedding_bc0"))}"')
    proc = run_cli(materialize, cwd=repo, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "has no table for" in proc.stderr and "feast apply" in proc.stderr, proc.stderr


def test_teardown_then_apply_creates_the_tables_again_and_a_locked_apply_is_one_line(tmp_path):
    """`feast teardown` then `feast apply` said "No changes to infrastructure" (teardown keeps the
    registry's record of the tables it dropped), then every read and materialization failed with
    `no such table`; an apply while another process held SQLite's write lock ended in a traceback.
    Now apply creates the missing tables (Feast's own SqliteOnlineStore.update) and the next
    incremental run fills them; the locked apply is one line, and its rerun completes."""
    import sqlite3

    repo = init_repo(tmp_path / "repo", project=unique_project("tear"))
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=2)
    run_cli(["feast", "apply"], cwd=repo)  # the CLI records the tables it creates in the registry
    _store(repo).materialize_incremental(_end_dt())
    run_cli(["feast", "teardown"], cwd=repo)
    applied = run_cli(["feast", "apply"], cwd=repo)
    assert "were missing although the registry exists" in applied.stderr, applied.stderr
    run_cli(["feast", "materialize-incremental", _end()], cwd=repo)
    assert_online_matches(_store(repo), fams)
    assert audit_repo(repo, sample=16).ok

    _publish_next(fams, catalog, seed=4)  # its apply must create the tables of a new view
    lock = sqlite3.connect(repo / "data" / "online_store.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        locked = run_cli(["feast", "apply"], cwd=repo, check=False)
    finally:
        lock.execute("COMMIT")
        lock.close()
    assert locked.returncode != 0 and "Traceback" not in locked.stderr, locked.stderr
    assert "is locked by another process" in locked.stderr and "run the same command again" in locked.stderr.lower()
    run_cli(["feast", "apply"], cwd=repo)
    run_cli(["feast", "materialize-incremental", _end()], cwd=repo)
    assert_online_matches(_store(repo), fams)
    assert audit_repo(repo, sample=16).ok


def test_gc_with_an_undeletable_orphan_removes_the_rest_and_says_which_in_one_line(tmp_path):
    """`gc` with an orphan it cannot remove ended in a traceback (root ignores permissions here, so the
    file is made immutable with `chattr +i`, which root cannot delete either)."""
    import subprocess

    repo = init_repo(tmp_path / "repo", project=unique_project("gcx"))
    catalog = Catalog.for_repo(repo)
    publish_users_and_items(catalog, versions=1)
    art = catalog.family_dir("item_embedding") / "artifacts"
    stuck, loose = art / "v0009-embeddings-0000.parquet", art / "v0009-transform-0000.safetensors"
    stuck.write_bytes(b"left by a killed publish")
    loose.write_bytes(b"left by a killed publish")
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    try:
        gc = run_cli(["feast-bc", "gc", "--repo", str(repo)], check=False)
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert gc.returncode == 2 and "Traceback" not in gc.stderr and len(gc.stderr.strip().splitlines()) == 1, gc.stderr
    assert f"could not remove {stuck}" in gc.stderr and "removed 1 of 2" in gc.stderr, gc.stderr
    assert stuck.exists() and not loose.exists()
    assert catalog.verify("item_embedding")
    assert "removed" in run_cli(["feast-bc", "gc", "--repo", str(repo)]).stdout and not stuck.exists()
