"""training: the embedding team's side of feast-bc (torch).

Trains successive versions of a recommender's embedding model with one of the eight strategies of
"Learning Backward Compatible Embeddings" (Hu et al., KDD 2022) or ours, bc-aligner-plus (the
default, docs/RESULTS.md), and publishes each version (embeddings of all users and items + the
backward transform B_k) through ``feast_bc`` so Feast serves every older version too.

Programmatic use::

    from training import TrainingRun, make_strategy, profile, MovieLensData, publish_output
    run = TrainingRun.create("work", strategy=make_strategy("bc-aligner-plus"), config=profile("default"),
                             data=MovieLensData())
    out = run.train_next_version()            # version 0, then 1, 2, ...
    publish_output(out, "feature_repo")       # + feast_bc.repo.apply

Importing this package is cheap: submodules (and torch) load on first use of a name, and Feast is
imported only when a repo is applied.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "AmazonData": "training.data",
    "DataConfig": "training.data",
    "InteractionDataset": "training.data",
    "MovieLensData": "training.data",
    "SyntheticData": "training.data",
    "TableData": "training.data",
    "VersionSplit": "training.data",
    "load_dataset": "training.data",
    "split_version": "training.data",
    "version_splits": "training.data",
    "TrainingConfig": "training.config",
    "profile": "training.config",
    "PROFILE_NAMES": "training.config",
    "ModelSpec": "training.models",
    "STRATEGY_NAMES": "training.strategies",
    "Strategy": "training.strategies",
    "StrategySpec": "training.strategies",
    "make_strategy": "training.strategies",
    "ModelCache": "training.cache",
    "VersionChain": "training.chain",
    "VersionOutput": "training.chain",
    "train_version": "training.chain",
    "TrainingRun": "training.workdir",
    "publish_output": "training.publish",
    "PublishResult": "training.publish",
    "BackwardCompatibility": "training.backward_compat",
    "fit_backward_transform": "training.posthoc_fit",
    "fit_for_catalog": "training.fit_transform",
    "publish_fit": "training.fit_transform",
    "TrainingError": "training.errors",
    "DatasetError": "training.errors",
    "ConfigError": "training.errors",
    "StateError": "training.errors",
    "DeviceError": "training.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from training.backward_compat import BackwardCompatibility
    from training.cache import ModelCache
    from training.chain import VersionChain, VersionOutput, train_version
    from training.config import PROFILE_NAMES, TrainingConfig, profile
    from training.data import (
        AmazonData,
        DataConfig,
        InteractionDataset,
        MovieLensData,
        SyntheticData,
        TableData,
        VersionSplit,
        load_dataset,
        split_version,
        version_splits,
    )
    from training.errors import ConfigError, DatasetError, DeviceError, StateError, TrainingError
    from training.fit_transform import fit_for_catalog, publish_fit
    from training.models import ModelSpec
    from training.posthoc_fit import fit_backward_transform
    from training.publish import PublishResult, publish_output
    from training.strategies import STRATEGY_NAMES, Strategy, StrategySpec, make_strategy
    from training.workdir import TrainingRun


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'training' has no attribute {name!r}")
