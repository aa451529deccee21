"""The main job: the whole embedding lifecycle in one command, on the embedded default stores.

``python -m training demo --workdir demo`` (what ``make demo`` runs) plays what the product is for:

1. builds a Feast repo at ``<workdir>/feature_repo`` (file offline store + SQLite online store,
   or Redis with ``--online-store redis``) and, for contrast, ``<workdir>/feature_repo_nobc``;
2. trains version 0 of the embedding model, publishes it, ``feast apply`` + ``feast materialize``;
3. a consumer team trains its model (the paper's MLP on the edge-rating task: does this user rate
   this item >= 4?) on version-0 embeddings it reads with ``get_online_features`` through the
   pinned FeatureServices ``user_embedding_v0`` / ``item_embedding_v0``;
4. versions 1..4 are trained three times: with the recommended method, ``bc-aligner-plus``
   (docs/RESULTS.md), into ``feature_repo``; with the paper's BC-Aligner into
   ``feature_repo_bc_aligner``; and without backward compatibility (No-BC: the new model's first
   D_0 coordinates are all a v0 pin can get) into ``feature_repo_nobc``; each published and
   materialized;
5. the *same* consumer model, never retrained, keeps predicting from its version-0 pin in every
   repo. Per version the demo prints intended Recall@50, the consumer's AUC, and the alignment
   error of the served version-0 vectors, checks the recommended method against its bar (consumer
   AUC within 0.02 of never updating, Recall@50 at least 97% of No-BC's), then writes
   ``report.json`` and ``report.png``.

Every value the consumer reads comes through Feast and is checked against the offline B-chain.
(Read top to bottom: settings, then the run; the report's schema, rendering and plot are in
demo_report.py, the command line in demo_cli.py.)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from training.cache import ModelCache
from training.chain import VersionChain
from training.config import profile
from training.data.config import DataConfig, SyntheticData, absolute, load_dataset
from training.data.splits import version_splits
from training.experiments.consumers.feast_source import FeastVer0Source
from training.experiments.consumers.metrics import roc_auc
from training.experiments.consumers.mlp import ConsumerSettings, as_tensor, fit_consumer, predict
from training.experiments.consumers.tasks import PROTOCOLS, TaskLabels
from training.experiments.demo_report import (
    STRATEGIES,
    DemoReport,
    DemoVersion,
    StrategyVersion,
    plot_report,
    render_version,
)
from training.strategies import make_strategy

REPO_NAMES = {"bc-aligner-plus": "feature_repo", "bc-aligner": "feature_repo_bc_aligner", "nobc": "feature_repo_nobc"}
#: Never updating the model: the consumer's ideal input (M_0 re-run on each new graph), computed
#: offline as the reference the two served strategies are compared with.
REFERENCE = "fix-m0"
CONSUMER_TASK = "binary-edge-rating"
MARKER = ".feast_bc_demo"


class DemoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workdir: Path = Path("demo")
    data: DataConfig = Field(default_factory=SyntheticData)
    profile: str = "demo"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str | None = None
    seed: int = 42
    device: str = "cpu"
    versions: int | None = Field(None, ge=1, description="stop after this many versions (default: all of the profile)")
    consumer_hidden: int = 256
    consumer_dropout: float = 0.25
    consumer_epochs: int = 40
    consumer_patience: int = 5
    progress: bool = True


def run_demo(settings: DemoSettings) -> DemoReport:
    started = time.perf_counter()
    workdir = settings.workdir.absolute()
    _prepare(workdir)
    config = profile(settings.profile)
    dataset = load_dataset(absolute(settings.data))
    splits = version_splits(dataset, config.time_slices)
    num_versions = min(settings.versions or config.num_versions, config.num_versions)
    labels = TaskLabels(dataset, splits)
    cache = ModelCache(workdir / "model_cache")
    chains, sources, repos = {}, {}, {}
    from feast_bc.repo import init_repo

    for name in STRATEGIES:
        repo = workdir / REPO_NAMES[name]
        project = REPO_NAMES[name].replace("feature_repo", "feast_bc_demo")
        init_repo(repo, project=project, online_store=settings.online_store, redis_url=settings.redis_url)
        repos[name] = str(repo)
        chains[name] = VersionChain(
            make_strategy(name), dataset, config, seed=settings.seed, device=settings.device, cache=cache
        )
        sources[name] = FeastVer0Source(repo, project)

    reference = VersionChain(
        make_strategy(REFERENCE), dataset, config, seed=settings.seed, device=settings.device, cache=cache
    )
    consumer = None
    rows: list[DemoVersion] = []
    bar = tqdm(range(num_versions), desc="versions", unit="version", disable=not settings.progress)
    for k in bar:
        bar.set_postfix(step=f"{REFERENCE} reference")
        ref = reference.train_next(progress=False)  # version 0 comes from the shared cache
        evaluated = k >= PROTOCOLS[CONSUMER_TASK].first_eval_version
        test = labels.at(CONSUMER_TASK, k) if evaluated else None
        row = DemoVersion(
            version=k, strategies={}, reference_recall_at_50=ref.record.recall, reference_consumer_auc=None
        )
        for name in STRATEGIES:
            bar.set_postfix(step=f"train {name}")
            out = chains[name].train_next(progress=False)
            bar.set_postfix(step=f"publish+materialize {name}")
            users_v0, items_v0, check = sources[name].fetch(out)  # read back through the v0 pins
            if consumer is None:
                consumer = _train_consumer(labels, users_v0, items_v0, settings, config.dims[0])
            auc = None
            if evaluated:
                auc = roc_auc(test.labels, predict(consumer.model, test.features(users_v0, items_v0)))
            row.strategies[name] = StrategyVersion(
                **out.record.model_dump(), strategy=name, consumer_auc=auc, feast=check
            )
        if evaluated:
            row.reference_consumer_auc = roc_auc(
                test.labels, predict(consumer.model, test.features(ref.user_ver0, ref.item_ver0))
            )
        rows.append(row)
        tqdm.write(render_version(row))
    report = DemoReport(
        data=dataset.name,
        online_store=settings.online_store,
        repos=repos,
        config=config,
        consumer={
            "task": CONSUMER_TASK,
            "hidden": consumer.hidden_dim,
            "dropout": consumer.dropout,
            "val_auc_v0": consumer.val_auc,
            "best_epoch": consumer.best_epoch,
            "trained_on": "version-0 embeddings read through Feast (user_embedding_v0, item_embedding_v0)",
        },
        versions=rows,
        wall_seconds=round(time.perf_counter() - started, 1),
        all_feast_checks_passed=all(s.feast.passed for r in rows for s in r.strategies.values()),
        bar_met=None if len(rows) < 2 else all(r.meets_bar() for r in rows[1:] if r.meets_bar() is not None),
    )
    (workdir / "report.json").write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n")
    plot_report(report, workdir / "report.png")
    return report


def _prepare(workdir: Path) -> None:
    """Start from a clean slate, but only ever delete a directory the demo itself created."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise FileExistsError(f"{workdir} is not empty and was not created by the demo; choose another --workdir")
        for child in workdir.iterdir():
            if child.name in ("model_cache", MARKER):
                continue  # BPR-only models are keyed by data, config and seed: safe to reuse
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).touch()


def _train_consumer(labels: TaskLabels, users_v0: np.ndarray, items_v0: np.ndarray, settings: DemoSettings, dim0: int):
    """The consumer team's model: trained once, on version 0, from what Feast served them."""
    train = labels.train(CONSUMER_TASK)
    val = labels.at(CONSUMER_TASK, PROTOCOLS[CONSUMER_TASK].early_stop_version)
    consumer_settings = ConsumerSettings(
        hidden_dims=(settings.consumer_hidden,),
        dropouts=(settings.consumer_dropout,),
        num_seeds=1,
        edge_max_epochs=settings.consumer_epochs,
        edge_patience=settings.consumer_patience,
    )
    return fit_consumer(
        as_tensor(train.features(users_v0, items_v0)),
        as_tensor(train.labels),
        as_tensor(val.features(users_v0, items_v0)),
        val.labels,
        hidden_dim=settings.consumer_hidden,
        dropout=settings.consumer_dropout,
        seed=0,
        settings=consumer_settings,
        level=PROTOCOLS[CONSUMER_TASK].level,
        progress=False,
    )
