"""The paper's aggregation over a reproduction's raw results (:mod:`training.experiments.report`
says what each figure is): per method, per task and per version, the targets, and the whole
:class:`~training.experiments.report.ReproduceResults`."""

from __future__ import annotations

import numpy as np

from training.evaluation import PRIMARY_K
from training.experiments.consumers.protocol import ConsumerSelection
from training.experiments.consumers.tasks import TASK_NAMES
from training.experiments.report import (
    INTENDED_REFERENCE,
    RECOMMENDED,
    TARGET_INTENDED_PCT,
    TARGET_TASK_PCT,
    TARGET_UNINTENDED_PCT,
    UNINTENDED_REFERENCE,
    ReproduceResults,
    RunMeta,
    StrategyResult,
    SummaryRow,
    Targets,
    TaskRow,
    VersionRow,
)


def nan_mean(values) -> float:
    """Mean ignoring NaN (a one-class AUC); NaN when nothing is left."""
    arr = np.asarray(list(values), dtype=np.float64)
    return float(np.nanmean(arr)) if arr.size and not np.all(np.isnan(arr)) else float("nan")


def task_auc(result: StrategyResult, task: str) -> float:
    """A task's AUC for one method: mean over seeds and its evaluated versions (the notebook's slices)."""
    per_version = result.unintended.get(task, {})
    return nan_mean(a for aucs in per_version.values() for a in aucs)


def unintended_auc(result: StrategyResult) -> float:
    return nan_mean(task_auc(result, t) for t in TASK_NAMES if result.unintended.get(t))


def intended_recall(result: StrategyResult) -> float:
    return nan_mean(v.val_recall[PRIMARY_K] for v in result.versions)


def _relative(value: float, reference: float) -> float:
    return (value - reference) / reference * 100.0


def summarize(strategies: dict[str, StrategyResult]) -> list[SummaryRow]:
    ref_r = intended_recall(strategies[INTENDED_REFERENCE])
    ref_u = unintended_auc(strategies[UNINTENDED_REFERENCE])
    rows = []
    for name, result in strategies.items():
        r, u = intended_recall(result), unintended_auc(result)
        di, du = _relative(r, ref_r), _relative(u, ref_u)
        rows.append(
            SummaryRow(
                strategy=name,
                intended_recall=r,
                intended_delta_pct=di,
                unintended_auc=u,
                unintended_delta_pct=du,
                total_delta_pct=di + du,
                alignment_error=nan_mean(v.fix_m0_alignment_error for v in result.versions),
            )
        )
    return rows


def _version_auc(result: StrategyResult, version: int) -> float | None:
    """Mean over the tasks evaluated at ``version`` of their seed-mean AUC (the notebook's per-version plot)."""
    values = [nan_mean(result.unintended[t][version]) for t in TASK_NAMES if version in result.unintended.get(t, {})]
    return nan_mean(values) if values else None


def per_version(strategies: dict[str, StrategyResult]) -> list[VersionRow]:
    nobc, fix = strategies[INTENDED_REFERENCE], strategies[UNINTENDED_REFERENCE]
    ref_recall = {v.version: v.val_recall[PRIMARY_K] for v in nobc.versions}
    rows = []
    for name, result in strategies.items():
        for v in result.versions:
            auc, ref = _version_auc(result, v.version), _version_auc(fix, v.version)
            rows.append(
                VersionRow(
                    strategy=name,
                    version=v.version,
                    recall=v.val_recall[PRIMARY_K],
                    intended_delta_points=(v.val_recall[PRIMARY_K] - ref_recall[v.version]) * 100.0,
                    unintended_auc=auc,
                    unintended_delta_points=None if auc is None or ref is None else (auc - ref) * 100.0,
                    alignment_error=v.fix_m0_alignment_error,
                )
            )
    return rows


def per_task(strategies: dict[str, StrategyResult]) -> list[TaskRow]:
    fix = strategies[UNINTENDED_REFERENCE]
    rows = []
    for name, result in strategies.items():
        for task in TASK_NAMES:
            versions = result.unintended.get(task, {})
            if not versions:
                continue
            matrix = np.array([versions[v] for v in sorted(versions)], dtype=np.float64)  # (versions, seeds)
            ref = task_auc(fix, task)
            seed_means = np.nanmean(matrix, axis=0)
            rows.append(
                TaskRow(
                    strategy=name,
                    task=task,
                    version=None,
                    auc_mean=task_auc(result, task),
                    auc_std=float(np.nanstd(seed_means)),
                    delta_pct=_relative(task_auc(result, task), ref),
                )
            )
            for v in sorted(versions):
                mean, ref_v = nan_mean(versions[v]), nan_mean(fix.unintended[task][v])
                rows.append(
                    TaskRow(
                        strategy=name,
                        task=task,
                        version=v,
                        auc_mean=mean,
                        auc_std=float(np.nanstd(versions[v])),
                        delta_pct=_relative(mean, ref_v),
                    )
                )
    return rows


def targets(summary: list[SummaryRow], tasks: list[TaskRow]) -> Targets:
    by = {r.strategy: r for r in summary}
    bc, nobc, ours = by.get("bc-aligner"), by.get("nobc"), by.get(RECOMMENDED)
    best = max(summary, key=lambda r: r.total_delta_pct).strategy if summary else None
    worst = min(
        (t for t in tasks if t.strategy == RECOMMENDED and t.version is None), key=lambda t: t.delta_pct, default=None
    )
    within = None
    if ours is not None:
        within = (
            ours.intended_delta_pct >= TARGET_INTENDED_PCT
            and ours.unintended_delta_pct >= TARGET_UNINTENDED_PCT
            and (worst is None or worst.delta_pct >= TARGET_TASK_PCT)
            and best == RECOMMENDED
        )
    return Targets(
        bc_aligner_intended_delta_pct=bc.intended_delta_pct if bc else None,
        bc_aligner_unintended_delta_pct=bc.unintended_delta_pct if bc else None,
        nobc_unintended_delta_pct=nobc.unintended_delta_pct if nobc else None,
        intended_within_target=bc.intended_delta_pct >= TARGET_INTENDED_PCT if bc else None,
        ours_intended_delta_pct=ours.intended_delta_pct if ours else None,
        ours_unintended_delta_pct=ours.unintended_delta_pct if ours else None,
        ours_worst_task=worst.task if worst else None,
        ours_worst_task_delta_pct=worst.delta_pct if worst else None,
        ours_within_targets=within,
        best_total=best,
    )


def aggregate(
    meta: RunMeta, strategies: dict[str, StrategyResult], consumers: dict[str, ConsumerSelection]
) -> ReproduceResults:
    summary = summarize(strategies)
    tasks = per_task(strategies)
    checks = [c for s in strategies.values() for c in s.feast_checks]
    return ReproduceResults(
        meta=meta,
        strategies=strategies,
        consumers=consumers,
        summary=summary,
        per_version=per_version(strategies),
        per_task=tasks,
        targets=targets(summary, tasks),
        feast_checks_passed=all(c.passed for c in checks),
    )
