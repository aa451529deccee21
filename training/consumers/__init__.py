"""The consumer side of feast-bc: the paper's unintended tasks and the consumer models C_0.

* :mod:`~training.consumers.tasks`       -- the five tasks' labels and protocol (which versions);
* :mod:`~training.consumers.metrics`     -- ROC-AUC (rank-based, ties averaged; no scikit-learn);
* :mod:`~training.consumers.mlp`         -- the paper's MLP and its training loop;
* :mod:`~training.consumers.protocol`    -- grid search on seed 0, N seeds, evaluation on a strategy;
* :mod:`~training.consumers.feast_source` -- ver-0 embeddings read through Feast's pinned services.

Names resolve lazily (``training.consumers.TaskLabels``) so importing the package loads no torch.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "TASK_NAMES": "training.consumers.tasks",
    "PROTOCOLS": "training.consumers.tasks",
    "Examples": "training.consumers.tasks",
    "TaskLabels": "training.consumers.tasks",
    "TaskProtocol": "training.consumers.tasks",
    "roc_auc": "training.consumers.metrics",
    "ConsumerMLP": "training.consumers.mlp",
    "ConsumerSettings": "training.consumers.mlp",
    "fit_consumer": "training.consumers.mlp",
    "predict": "training.consumers.mlp",
    "ConsumerSelection": "training.consumers.protocol",
    "TaskConsumers": "training.consumers.protocol",
    "train_task_consumers": "training.consumers.protocol",
    "FeastCheck": "training.consumers.feast_source",
    "FeastVer0Source": "training.consumers.feast_source",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'training.consumers' has no attribute {name!r}")
