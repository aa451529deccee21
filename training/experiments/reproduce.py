"""`python -m training reproduce`: the paper's experiment end to end, and its report.

All nine strategies (the paper's eight and ours) × five versions, plus any labelled variants, are
trained with :class:`training.chain.VersionChain` sharing one :class:`training.cache.ModelCache`
(version 0 and the BPR-only No-BC models are trained once and reused by every strategy that needs
them); the consumers C_0 of the five unintended tasks are trained once on Fix-M0's (true)
version-0 embeddings and applied to every method's ver-0-compatible embeddings; for the methods in
``feast_strategies`` (BC-Aligner and ours by default) those embeddings are read through Feast
(published, materialized, fetched from the pinned ``*_v0`` FeatureServices) and checked against
the offline computation. The report (:mod:`training.experiments.report`,
:mod:`training.experiments.report_markdown`, :mod:`training.experiments.plots`) is written into
``--out``; the configuration lives in :mod:`training.experiments.reproduce_config`.

Profiles:

* ``quick`` -- synthetic data, the ``demo`` training profile (dims 32..64), a 2 × 2 consumer grid and
  3 seeds: the whole pipeline in about two minutes on 2 cores;
* ``full``  -- MovieLens 100K, the ``fast`` training profile (the paper's dims and layers, 40
  epochs), the paper's 4 × 3 consumer grid and 10 seeds with early stopping: within an hour on 2 cores.

The per-strategy chain runs and the consumer evaluation are one pipeline read top to bottom; its
command line is in reproduce_cli.py, its configuration in reproduce_config.py, the report in
report.py / report_markdown.py.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from training.cache import ModelCache
from training.chain import VersionChain, alignment_error, resolve_device
from training.data import load_dataset, version_splits
from training.experiments.consumers.feast_source import FeastVer0Source
from training.experiments.consumers.protocol import train_task_consumers
from training.experiments.consumers.tasks import TASK_NAMES, TaskLabels
from training.experiments.plots import plot_titles, write_plots
from training.experiments.report import MachineInfo, RunMeta, StrategyResult, VersionResult, processor_name
from training.experiments.report_aggregate import aggregate
from training.experiments.report_markdown import render_markdown
from training.experiments.reproduce_config import (
    ReproduceConfig,
)
from training.record import TrainedVersion
from training.strategies import StrategySpec, strategy_from_spec


# ----------------------------------------------------------------------------- the pipeline
@contextlib.contextmanager
def _work_directory(path: str | Path | None):
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path).absolute()
        return
    with tempfile.TemporaryDirectory(prefix="reproduce-") as tmp:
        yield Path(tmp)


def run_reproduction(
    config: ReproduceConfig,
    out_dir: str | Path,
    *,
    workdir: str | Path | None = None,
    progress: bool = True,
    command: str = "",
):
    """Train, evaluate and report; returns the :class:`training.experiments.report.ReproduceResults` written to ``out_dir``.

    ``workdir`` keeps the model cache (and the Feast repos) between runs; by default a temporary
    directory is used and removed.
    """

    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, out_dir, workdir=workdir, progress=progress, command=command)
    finally:
        torch.set_num_threads(threads)


@dataclass
class _ChainRun:
    """One strategy's trained versions, reduced to what the evaluation needs (z_k and models dropped)."""

    name: str
    spec: StrategySpec
    records: list[tuple[TrainedVersion, str]]  # each version's record and where its ver-0 vectors were read
    offline: dict[int, tuple[np.ndarray, np.ndarray]]  # B-chain computed in training
    served: dict[int, tuple[np.ndarray, np.ndarray]]  # what the consumers get (read through Feast or offline)
    checks: list  # FeastCheck per version read through Feast
    seconds: float


def _train_chain(
    name: str,
    spec: StrategySpec,
    config: ReproduceConfig,
    dataset,
    cache,
    device,
    feast_dir: Path,
    run_id: str,
    progress: bool,
) -> _ChainRun:
    """Train every version of one method; the methods in ``feast_strategies`` are read through Feast."""

    started = time.perf_counter()
    chain = VersionChain(
        strategy_from_spec(spec), dataset, config.training, seed=config.seed, device=device, cache=cache
    )
    source = None
    if name in config.feast_strategies:
        source = FeastVer0Source(feast_dir / name, f"repro_{run_id}_{name.replace('-', '_')}")
    run = _ChainRun(name, spec, [], {}, {}, [], 0.0)
    for _ in tqdm(range(config.training.num_versions), desc=f"{name} versions", disable=not progress, leave=False):
        output = chain.train_next(progress=progress)
        k = output.version
        run.offline[k] = (output.user_ver0, output.item_ver0)
        if source is not None:
            user, item, check = source.fetch(output)
            run.served[k] = (user, item)
            run.checks.append(check)
        else:
            run.served[k] = run.offline[k]
        run.records.append((output.record, "feast" if source is not None else "offline"))
    run.seconds = time.perf_counter() - started
    return run


def _run(config: ReproduceConfig, out_dir, *, workdir, progress: bool, command: str):
    """Train every method's chain (Fix-M0 first: it trains the consumers), judge each, write the report."""
    device = resolve_device(config.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started, started_at, load_start = time.perf_counter(), datetime.now(UTC), os.getloadavg()[0]
    phases: dict[str, float] = {}

    t = time.perf_counter()
    dataset = load_dataset(config.data)
    labels = TaskLabels(dataset, version_splits(dataset, config.training.time_slices))
    phases["data"] = time.perf_counter() - t
    run_id = uuid.uuid4().hex[:8]
    strategies: dict[str, StrategyResult] = {}
    consumers: dict = {}
    reference: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    with _work_directory(workdir) as work:
        cache = ModelCache(work / "model_cache")
        methods = config.methods()
        bar = tqdm(methods.items(), desc="strategies", disable=not progress, total=len(methods))
        for name, spec in bar:  # Fix-M0 first: its embeddings train the consumers and are the reference
            bar.set_postfix(strategy=name)
            run = _train_chain(name, spec, config, dataset, cache, device, work / f"feast-{run_id}", run_id, progress)
            phases[f"train {name}"] = run.seconds
            if name == "fix-m0":
                reference = run.offline
                t = time.perf_counter()
                consumers = {
                    task: train_task_consumers(
                        task, labels, reference, config.consumer, device=device, progress=progress
                    )
                    for task in tqdm(TASK_NAMES, desc="consumers", disable=not progress, leave=False)
                }
                phases["consumers"] = time.perf_counter() - t
            t = time.perf_counter()
            strategies[name] = _evaluated(name, spec, run, consumers, reference)
            phases["evaluate"] = phases.get("evaluate", 0.0) + (time.perf_counter() - t)

    t = time.perf_counter()
    results = aggregate(
        _run_meta(config, dataset, command, started_at, load_start),
        strategies,
        {task: c.selection for task, c in consumers.items()},
    )
    plots = write_plots(results, out)
    phases["report"] = time.perf_counter() - t
    results.meta.phase_seconds = {k: round(v, 1) for k, v in phases.items()}
    results.meta.wall_seconds = round(time.perf_counter() - started, 1)
    titles = plot_titles()
    (out / "report.md").write_text(render_markdown(results, plots={titles[k]: p.name for k, p in plots.items()}))
    (out / "results.json").write_text(results.model_dump_json(indent=2))
    return results


def _evaluated(name: str, spec, run, consumers: dict, reference: dict) -> StrategyResult:
    """One strategy's chain judged: the version-0 consumers on what it served, its versions against Fix-M0's."""
    t = time.perf_counter()
    unintended = {task: c.evaluate_chain(run.served) for task, c in consumers.items()}
    versions = [
        VersionResult(
            **record.model_dump(),
            ver0_source=source,
            fix_m0_alignment_error=alignment_error(*run.offline[record.version], *reference[record.version])["all"],
        )
        for record, source in run.records
    ]
    return StrategyResult(
        name=name,
        lam=spec.lam,
        params=spec.model_dump(),
        versions=versions,
        unintended=unintended,
        feast_checks=run.checks,
        chain_seconds=round(run.seconds, 3),
        eval_seconds=round(time.perf_counter() - t, 3),
    )


def _run_meta(config: ReproduceConfig, dataset, command: str, started_at: datetime, load_start: float) -> RunMeta:
    """What the run was and where it ran (the wall and phase times are filled in at the end)."""
    machine = MachineInfo(
        platform=platform.platform(),
        processor=processor_name(),
        cpus=os.cpu_count() or 0,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        loadavg_start=load_start,
        loadavg_end=os.getloadavg()[0],
    )
    return RunMeta(
        command=command,
        profile=config.profile,
        dataset=dataset.name,
        dataset_summary=dataset.summary(),
        config=config.model_dump(mode="json"),
        started_at=started_at,
        wall_seconds=0.0,
        phase_seconds={},
        machine=machine,
    )
