"""Interaction data: one dataset type, its loaders, and the paper's version splits."""

from training.data.config import (
    AmazonData,
    DataConfig,
    MovieLensData,
    SyntheticData,
    TableData,
    default_movielens_dir,
    load_dataset,
)
from training.data.dataset import AttributeGroup, InteractionDataset, build_dataset
from training.data.splits import PAPER_TIME_SLICES, VersionSplit, split_version, version_splits

__all__ = [
    "PAPER_TIME_SLICES",
    "AmazonData",
    "AttributeGroup",
    "DataConfig",
    "InteractionDataset",
    "MovieLensData",
    "SyntheticData",
    "TableData",
    "VersionSplit",
    "build_dataset",
    "default_movielens_dir",
    "load_dataset",
    "split_version",
    "version_splits",
]
