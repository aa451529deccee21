"""The paper's aggregation (analyze_all_results.ipynb) on hand-made results, and the report files."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from training.experiments.plots import PLOT_FILES, write_plots
from training.experiments.report import (
    MachineInfo,
    RunMeta,
    StrategyResult,
    VersionResult,
    processor_name,
)
from training.experiments.report_aggregate import aggregate
from training.experiments.report_markdown import render_markdown
from training.models.factory import ModelSpec


def _versions(recalls, aligns):
    return [
        VersionResult(
            version=k,
            time_train=0.5,
            time_next=0.6,
            num_users=3,
            num_items=4,
            model=ModelSpec(dim=8, num_layers=1),
            val_recall={50: r},
            fix_m0_alignment_error=a,
            selected_epoch=1,
            epochs_run=1,
            train_seconds=0.0,
            total_seconds=0.0,
            from_cache=False,
            ver0_source="offline",
        )
        for k, (r, a) in enumerate(zip(recalls, aligns, strict=True))
    ]


def _strategy(name, recalls, aligns, edge, activity):
    return StrategyResult(
        name=name,
        lam=None,
        versions=_versions(recalls, aligns),
        unintended={"binary-edge-rating": edge, "user-activity": activity},
        chain_seconds=0.0,
        eval_seconds=0.0,
    )


@pytest.fixture
def results():
    strategies = {
        "fix-m0": _strategy("fix-m0", [0.2, 0.2, 0.2], [0, 0, 0], {1: [0.8, 0.8], 2: [0.8, 0.8]}, {2: [0.6, 0.6]}),
        "nobc": _strategy("nobc", [0.2, 0.3, 0.4], [0, 2, 2], {1: [0.5, 0.5], 2: [0.5, 0.5]}, {2: [0.5, 0.5]}),
        "bc-aligner": _strategy(
            "bc-aligner", [0.2, 0.3, 0.31], [0, 0.3, 0.6], {1: [0.78, 0.80], 2: [0.76, 0.78]}, {2: [0.6, 0.58]}
        ),
        "bc-aligner-plus": _strategy(
            "bc-aligner-plus", [0.2, 0.31, 0.4], [0, 0.1, 0.1], {1: [0.8, 0.79], 2: [0.79, 0.8]}, {2: [0.59, 0.6]}
        ),
    }
    machine = MachineInfo(
        platform="p", processor="x", cpus=2, torch="t", torch_threads=2, python="3", loadavg_start=0, loadavg_end=0
    )
    meta = RunMeta(
        command="python -m training reproduce --out x",
        profile="quick",
        dataset="hand",
        dataset_summary="hand",
        config={},
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        wall_seconds=60.0,
        phase_seconds={"all": 60.0},
        machine=machine,
    )
    return aggregate(meta, strategies, {})


def test_main_table_is_the_notebooks_formula(results):
    rows = {r.strategy: r for r in results.summary}
    # intended: mean R@50 over versions 0.2 / 0.3 / 0.27, relative to No-BC's 0.3
    assert rows["fix-m0"].intended_delta_pct == pytest.approx(-100 / 3)
    assert rows["nobc"].intended_delta_pct == 0.0
    assert rows["bc-aligner"].intended_delta_pct == pytest.approx(-10.0)
    # unintended: per task mean over seeds x versions (edge 0.78, activity 0.59), then over tasks: 0.685 vs 0.7
    assert rows["bc-aligner"].unintended_auc == pytest.approx(0.685)
    assert rows["bc-aligner"].unintended_delta_pct == pytest.approx(-15 / 7)
    assert rows["nobc"].unintended_delta_pct == pytest.approx(-200 / 7)
    assert rows["bc-aligner"].total_delta_pct == pytest.approx(-10.0 - 15 / 7)
    assert rows["bc-aligner"].alignment_error == pytest.approx(0.3)  # mean over versions 0..2
    t = results.targets
    assert t.intended_within_target is False
    assert t.nobc_unintended_delta_pct == pytest.approx(-200 / 7)
    # ours: recall 0.91/3 vs 0.9/3 (+1.11%), edge 0.795 and activity 0.595 vs 0.8 / 0.6 (mean 0.695 vs 0.7)
    assert t.ours_intended_delta_pct == pytest.approx(100 / 90) and rows[
        "bc-aligner-plus"
    ].unintended_auc == pytest.approx(0.695)
    assert t.ours_unintended_delta_pct == pytest.approx(-0.5 / 0.7)
    assert t.ours_worst_task == "user-activity" and t.ours_worst_task_delta_pct == pytest.approx(-0.5 / 0.6)
    assert t.best_total == "bc-aligner-plus" and t.ours_within_targets is True


def test_per_version_and_per_task(results):
    cell = {(r.strategy, r.version): r for r in results.per_version}
    assert cell[("bc-aligner", 0)].unintended_auc is None  # no task is evaluated at version 0
    assert cell[("bc-aligner", 1)].unintended_delta_points == pytest.approx(-1.0)  # edge task only: 0.79 vs 0.8
    assert cell[("bc-aligner", 2)].unintended_delta_points == pytest.approx(-2.0)  # (0.77 + 0.59) / 2 vs 0.7
    assert cell[("bc-aligner", 2)].intended_delta_points == pytest.approx(-9.0)
    task = {(r.strategy, r.task, r.version): r for r in results.per_task}
    assert task[("bc-aligner", "binary-edge-rating", None)].delta_pct == pytest.approx(-2.5)
    assert task[("bc-aligner", "binary-edge-rating", 2)].delta_pct == pytest.approx(-3.75)
    assert task[("bc-aligner", "user-activity", 2)].auc_std == pytest.approx(0.01)


def test_report_renders_tables_and_plots(results, tmp_path):
    plots = write_plots(results, tmp_path)
    assert set(plots) == set(PLOT_FILES)
    for path in plots.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
    text = render_markdown(results, plots={name: p.name for name, p in plots.items()})
    assert "| BC-Aligner (Joint-Lin-MLoss) | -10.00 | -2.14 | -12.14 | 0.300 | -2.96 |" in text
    assert "| **BC-Aligner+ (ours)** | **+1.11** | **-0.71** | **+0.40** | **0.067** |" in text  # the recommended, bold
    assert "**BC-Aligner+ (ours) per task and version, Δ% vs Fix-M0**" in text
    assert "![intended](intended.png)" in text and "Intended task per version" in text
    assert "* BC-Aligner intended Δ vs No-BC: -10.00% (target ≥ -3%): **missed**" in text
    assert results.model_validate_json(results.model_dump_json()) == results  # results.json round-trips


def test_the_machine_record_names_the_cpu_and_torchs_kernel_level(monkeypatch):
    """Floats (and so joint-training trajectories) differ between CPUs: the record says which one ran."""
    import torch

    name = processor_name()
    assert name.endswith(f"(torch {torch.backends.cpu.get_cpu_capability()})")
    assert not name.startswith(" ")
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(OSError("no /proc")))
    monkeypatch.setattr("platform.processor", lambda: "")
    assert processor_name().startswith("unknown CPU (torch ")
