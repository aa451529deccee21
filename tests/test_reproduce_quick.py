"""`python -m training reproduce --quick` end to end: every strategy, consumers, Feast, every report file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import main
from training.errors import ConfigError
from training.experiments.consumers.tasks import TASK_NAMES
from training.experiments.plots import PLOT_FILES
from training.experiments.reproduce_config import REPORT_FILES, make_config
from training.strategies import STRATEGY_NAMES

ACTIVITY = ("user-activity", "user-positive-activity")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quick")
    assert main(["reproduce", "--quick", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    return out


def test_quick_profile_writes_every_report_file(quick_run):
    for name in [*REPORT_FILES, *PLOT_FILES.values()]:
        path = quick_run / name
        assert path.is_file() and path.stat().st_size > 0, name
    for name in PLOT_FILES.values():
        assert (quick_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((quick_run / "results.json").read_text())
    assert set(results) == {
        "meta",
        "strategies",
        "consumers",
        "summary",
        "per_version",
        "per_task",
        "targets",
        "feast_checks_passed",
        "paper_musical_instruments",
    }
    assert list(results["strategies"]) == list(STRATEGY_NAMES)
    assert set(results["consumers"]) == set(TASK_NAMES)
    assert [r["strategy"] for r in results["summary"]] == list(STRATEGY_NAMES)
    report = (quick_run / "report.md").read_text()
    assert "| Method | Intended Δ% vs No-BC | Unintended Δ% vs Fix-M0 | Total | Align err |" in report
    for title in (
        "Alignment error per version",
        "BC-Aligner (Joint-Lin-MLoss) per task and version",
        "BC-Aligner+ (ours) per task and version",
        "Consumer models",
    ):
        assert title in report
    for file in PLOT_FILES.values():
        assert f"]({file})" in report


def test_quick_results_are_consistent(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    seeds = results["meta"]["config"]["consumer"]["num_seeds"]
    strategies = results["strategies"]
    rows = {r["strategy"]: r for r in results["summary"]}
    # references: exactly zero by definition
    assert rows["nobc"]["intended_delta_pct"] == 0 and rows["fix-m0"]["unintended_delta_pct"] == 0
    assert rows["fix-m0"]["alignment_error"] == 0
    # the post-hoc strategies reuse No-BC's models (model cache): identical intended results
    for name in ("posthoc-lin-sloss", "posthoc-lin-mloss"):
        assert rows[name]["intended_delta_pct"] == 0
        assert all(v["from_cache"] for v in strategies[name]["versions"])
    # version 0 is one shared M_0: same recall and no alignment error for everybody
    v0 = {s["versions"][0]["val_recall"]["50"] for s in strategies.values()}
    assert len(v0) == 1 and all(s["versions"][0]["fix_m0_alignment_error"] == 0 for s in strategies.values())
    for name, s in strategies.items():
        assert set(s["unintended"]) == set(TASK_NAMES)
        for task, per_version in s["unintended"].items():
            assert list(per_version) == (["2", "3", "4"] if task in ACTIVITY else ["1", "2", "3", "4"]), (name, task)
            assert all(len(aucs) == seeds for aucs in per_version.values())
    # BC-Aligner's consumers read through Feast, every version checked against the offline chain
    assert results["feast_checks_passed"] is True
    bc = strategies["bc-aligner"]
    assert [v["ver0_source"] for v in bc["versions"]] == ["feast"] * 5
    assert [c["version"] for c in bc["feast_checks"]] == [0, 1, 2, 3, 4]
    assert all(c["passed"] and max(c["max_abs_diff_user"], c["max_abs_diff_item"]) <= 1e-5 for c in bc["feast_checks"])
    assert strategies["nobc"]["versions"][1]["ver0_source"] == "offline"
    # the consumers learned the planted structure of the synthetic data on the true embeddings
    fix = {r["task"]: r["auc_mean"] for r in results["per_task"] if r["strategy"] == "fix-m0" and r["version"] is None}
    assert fix["binary-edge-rating"] > 0.8


def test_the_reference_strategies_always_run():
    # the data options are tested once for all commands: test_training_data.py
    config = make_config("full", strategies=["bc-aligner"], feast_strategies=[])
    assert config.strategies == ("fix-m0", "nobc", "bc-aligner")  # the references always run
    assert config.training.dims == (256, 320, 384, 448, 512) and config.consumer.num_seeds == 10
    with pytest.raises(ConfigError, match="unknown strategy"):
        make_config("quick", strategies=["no-such"])
