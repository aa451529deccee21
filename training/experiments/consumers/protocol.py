"""The consumer team's protocol: select C_0's hyper-parameters, train it on N seeds, evaluate it.

As ``train_model.py`` / ``eval_model.py`` of the authors' code, per task:

1. grid search on seed 0 over hidden ∈ {128, 256, 512, 1024} × dropout ∈ {0, 0.25, 0.5} (as
   configured), each model trained on the task's version-0 rows with the **true** version-0
   embeddings (Fix-M0's: M_0 on version 0's graph) and early-stopped on the protocol's early-stop
   rows (version 0's validation rows, or version 1's for the activity tasks, embedded by M_0 on
   version 1's graph); the setting with the best validation ROC-AUC wins (ties: first in the
   authors' loop order);
2. the winning setting is trained with seeds 0..N-1. Seed 0 *is* the grid's model for that setting
   (same seed, data and schedule give the same model on CPU), so it is reused, not retrained;
3. every seed's model is applied, frozen, to a strategy's ver-0-compatible embeddings of each
   evaluated version, giving one ROC-AUC per (version, seed).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from tqdm.auto import tqdm

from training.experiments.consumers.metrics import roc_auc
from training.experiments.consumers.mlp import ConsumerFit, ConsumerSettings, as_tensor, fit_consumer, predict
from training.experiments.consumers.tasks import PROTOCOLS, TaskLabels, TaskProtocol

#: version -> (user embeddings, item embeddings) in version 0's space, rows = dataset indices.
Ver0Embeddings = Mapping[int, tuple[np.ndarray, np.ndarray]]


class FitSummary(BaseModel):
    """One trained consumer, as recorded in the results."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    hidden_dim: int
    dropout: float
    seed: int
    val_auc: float
    best_epoch: int
    epochs_run: int
    seconds: float
    #: validation ROC-AUC after every epoch: shows whether stopping early cut off a later improvement
    val_history: list[float]

    @classmethod
    def of(cls, fit: ConsumerFit) -> FitSummary:
        return cls(
            hidden_dim=fit.hidden_dim,
            dropout=fit.dropout,
            seed=fit.seed,
            val_auc=fit.val_auc,
            best_epoch=fit.best_epoch,
            epochs_run=fit.epochs_run,
            seconds=round(fit.seconds, 3),
            val_history=[round(a, 5) for a in fit.val_history],
        )


class ConsumerSelection(BaseModel):
    """How a task's C_0 was chosen and trained."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    task: str
    level: str
    early_stop_version: int
    eval_versions: list[int]
    train_rows: int
    train_positive_rate: float
    val_rows: int
    val_positive_rate: float
    hidden_dim: int
    dropout: float
    grid: list[FitSummary]
    seeds: list[FitSummary]
    seconds: float


@dataclass
class TaskConsumers:
    """A task's trained C_0 models (one per seed), ready to be applied to any strategy's embeddings."""

    protocol: TaskProtocol
    labels: TaskLabels
    fits: list[ConsumerFit]
    selection: ConsumerSelection

    @property
    def task(self) -> str:
        return self.protocol.name

    def evaluate(self, version: int, user_emb: np.ndarray, item_emb: np.ndarray) -> list[float]:
        """ROC-AUC of every seed's C_0 on version ``version``'s rows embedded with the given ver-0 vectors."""
        rows = self.labels.at(self.task, version)
        device = next(self.fits[0].model.parameters()).device
        x = as_tensor(rows.features(user_emb, item_emb), device)
        return [roc_auc(rows.labels, predict(fit.model, x)) for fit in self.fits]

    def evaluate_chain(self, embeddings: Ver0Embeddings) -> dict[int, list[float]]:
        """AUC per seed at each of the task's evaluated versions present in ``embeddings``."""
        versions = [v for v in self.protocol.eval_versions(self.labels.num_versions) if v in embeddings]
        return {v: self.evaluate(v, *embeddings[v]) for v in versions}


def train_task_consumers(
    task: str,
    labels: TaskLabels,
    reference: Ver0Embeddings,
    settings: ConsumerSettings,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> TaskConsumers:
    """Grid on seed 0, then seeds 0..N-1 of the best setting; ``reference`` holds Fix-M0's embeddings."""
    started = time.perf_counter()
    protocol = PROTOCOLS[task]
    train_rows = labels.train(task)
    val_rows = labels.at(task, protocol.early_stop_version)
    x_train = as_tensor(train_rows.features(*reference[0]), device)
    y_train = as_tensor(train_rows.labels, device)
    x_val = as_tensor(val_rows.features(*reference[protocol.early_stop_version]), device)

    def fit(hidden: int, dropout: float, seed: int, what: str) -> ConsumerFit:
        return fit_consumer(
            x_train,
            y_train,
            x_val,
            val_rows.labels,
            hidden_dim=hidden,
            dropout=dropout,
            seed=seed,
            settings=settings,
            level=protocol.level,
            progress=progress,
            desc=f"{task} {what}",
        )

    grid: list[ConsumerFit] = []
    for hidden, dropout in tqdm(settings.grid, desc=f"{task} grid", disable=not progress, leave=False):
        grid.append(fit(hidden, dropout, 0, f"h{hidden} d{dropout:g}"))
    scores = np.array([g.val_auc for g in grid], dtype=np.float64)
    best = grid[int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))]  # argmax: first of ties

    fits = [best]
    for seed in tqdm(range(1, settings.num_seeds), desc=f"{task} seeds", disable=not progress, leave=False):
        fits.append(fit(best.hidden_dim, best.dropout, seed, f"seed {seed}"))

    selection = ConsumerSelection(
        task=task,
        level=protocol.level,
        early_stop_version=protocol.early_stop_version,
        eval_versions=protocol.eval_versions(labels.num_versions),
        train_rows=len(train_rows),
        train_positive_rate=train_rows.positive_rate,
        val_rows=len(val_rows),
        val_positive_rate=val_rows.positive_rate,
        hidden_dim=best.hidden_dim,
        dropout=best.dropout,
        grid=[FitSummary.of(g) for g in grid],
        seeds=[FitSummary.of(f) for f in fits],
        seconds=round(time.perf_counter() - started, 3),
    )
    return TaskConsumers(protocol, labels, fits, selection)
