"""The consumer side of feast-bc: the paper's unintended tasks and the consumer models C_0.

* :mod:`~training.experiments.consumers.tasks`       -- the five tasks' labels and protocol (which versions);
* :mod:`~training.experiments.consumers.metrics`     -- ROC-AUC (rank-based, ties averaged; no scikit-learn);
* :mod:`~training.experiments.consumers.mlp`         -- the paper's MLP and its training loop;
* :mod:`~training.experiments.consumers.protocol`    -- grid search on seed 0, N seeds, evaluation on a strategy;
* :mod:`~training.experiments.consumers.feast_source` -- ver-0 embeddings read through Feast's pinned services.

Names resolve lazily (``training.experiments.consumers.TaskLabels``) so importing the package loads no torch.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "TASK_NAMES": "training.experiments.consumers.tasks",
    "PROTOCOLS": "training.experiments.consumers.tasks",
    "Examples": "training.experiments.consumers.tasks",
    "TaskLabels": "training.experiments.consumers.tasks",
    "TaskProtocol": "training.experiments.consumers.tasks",
    "roc_auc": "training.experiments.consumers.metrics",
    "ConsumerMLP": "training.experiments.consumers.mlp",
    "ConsumerSettings": "training.experiments.consumers.mlp",
    "fit_consumer": "training.experiments.consumers.mlp",
    "predict": "training.experiments.consumers.mlp",
    "ConsumerSelection": "training.experiments.consumers.protocol",
    "TaskConsumers": "training.experiments.consumers.protocol",
    "train_task_consumers": "training.experiments.consumers.protocol",
    "FeastCheck": "training.experiments.consumers.feast_source",
    "FeastVer0Source": "training.experiments.consumers.feast_source",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'training.experiments.consumers' has no attribute {name!r}")
