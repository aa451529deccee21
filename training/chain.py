"""A version chain in memory: train version 0, 1, 2, ... of one strategy and collect the outputs.

This is the programmatic core; :mod:`training.workdir` adds persistence (checkpoints, state) and
:mod:`training.publish` puts an output into a feast_bc repo.

Every version's output holds what the embedding team promises downstream: the
embeddings of all users and items of the version's graph, B_k, the ver-0-compatible embeddings
(``B_1∘…∘B_k(z_k)`` computed from exactly the matrices that are published), validation recall,
and the alignment error to every older version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from training.alignment import chain_to
from training.cache import ModelCache
from training.config import TrainingConfig
from training.data.dataset import InteractionDataset
from training.data.splits import VersionSplit, split_version
from training.errors import DeviceError, StateError
from training.loop import IntendedTask, embed
from training.record import TrainedVersion
from training.strategies import History, Strategy, StrategyFit, VersionContext


@dataclass(eq=False)
class VersionOutput:
    """One trained version: its :class:`TrainedVersion` and its arrays. Row r of the user arrays is the
    user with index r (raw id ``user_ids[r]``)."""

    record: TrainedVersion
    strategy: str
    split: VersionSplit
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_embeddings: np.ndarray  # (num_users, D_k) float32
    item_embeddings: np.ndarray
    transform: np.ndarray | None  # B_k (D_{k-1}, D_k); None for version 0
    user_ver0: np.ndarray  # (num_users, D_0): what a version-0 consumer gets from this version
    item_ver0: np.ndarray

    # The record's facts, read through (the output is what callers hold).
    version = property(lambda self: self.record.version)
    spec = property(lambda self: self.record.model)
    transform_kind = property(lambda self: self.record.transform_kind)
    val_recall = property(lambda self: self.record.val_recall)
    alignment_error = property(lambda self: self.record.alignment_error)
    selected_epoch = property(lambda self: self.record.selected_epoch)
    epochs_run = property(lambda self: self.record.epochs_run)
    train_seconds = property(lambda self: self.record.train_seconds)
    total_seconds = property(lambda self: self.record.total_seconds)
    from_cache = property(lambda self: self.record.from_cache)

    @property
    def dim(self) -> int:
        return int(self.user_embeddings.shape[1])

    def metrics(self, entity: str | None = None) -> dict[str, float]:
        """Flat metrics for the catalog; alignment errors of one entity ('user'/'item') or of all objects."""
        out = {f"val_recall@{k}": float(v) for k, v in sorted(self.val_recall.items())}
        which = entity or "all"
        for j, errors in sorted(self.alignment_error.items()):
            out[f"align_error_v{j}"] = errors[which]
        out["train_seconds"] = round(self.train_seconds, 3)
        return out


def resolve_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {str(device)!r} requested but CUDA is not available here (torch {torch.__version__}, "
            "no usable GPU); use --device cpu"
        )
    if dev.type not in ("cpu", "cuda"):
        raise DeviceError(f"unsupported device {str(device)!r}; use cpu or cuda")
    return dev


def train_version(
    strategy: Strategy,
    dataset: InteractionDataset,
    config: TrainingConfig,
    history: History,
    *,
    seed: int = 42,
    device: str | torch.device = "cpu",
    progress: bool = False,
    cache: ModelCache | None = None,
) -> tuple[VersionOutput, StrategyFit]:
    """Train the version after ``history`` (version ``history.num_versions``)."""
    started = time.perf_counter()
    k = history.num_versions
    if k >= config.num_versions:
        raise StateError(
            f"all {config.num_versions} versions of the time slices {config.time_slices} are trained; "
            "there is no later slice to validate a new version on"
        )
    strategy.check(config)
    dev = resolve_device(device)
    split = split_version(dataset, config.time_slices[k], config.time_slices[k + 1], version=k)
    task = IntendedTask.for_split(dataset, split, config, dev)
    ctx = VersionContext(k, dataset, task, config, history, seed, dev, progress, cache)
    fit = strategy.fit_version(ctx)

    z_user, z_item = (z.cpu().numpy() for z in embed(fit.model, task.graph))
    transforms = list(history.transforms)
    if k > 0:
        if fit.transform is None:
            raise RuntimeError(f"strategy {strategy.name} returned no B_{k} for version {k}")
        transforms.append(fit.transform)
    errors = {}
    for j in range(k):
        old_user, old_item = (z.cpu().numpy() for z in embed(history.models[j], task.graph))
        errors[j] = alignment_error(
            chain_to(z_user, transforms, j), chain_to(z_item, transforms, j), old_user, old_item
        )
    record = TrainedVersion(
        version=k,
        time_train=split.time_train,
        time_next=split.time_next,
        num_users=split.num_users,
        num_items=split.num_items,
        model=fit.spec,
        transform_kind=fit.transform_kind,
        val_recall=fit.val_recall,
        alignment_error=errors,
        selected_epoch=fit.selected_epoch,
        epochs_run=fit.epochs_run,
        train_seconds=fit.seconds,
        total_seconds=time.perf_counter() - started,
        from_cache=fit.from_cache,
    )
    output = VersionOutput(
        record=record,
        strategy=strategy.name,
        split=split,
        user_ids=dataset.user_ids[: split.num_users],
        item_ids=dataset.item_ids[: split.num_items],
        user_embeddings=z_user,
        item_embeddings=z_item,
        transform=fit.transform,
        user_ver0=chain_to(z_user, transforms, 0),
        item_ver0=chain_to(z_item, transforms, 0),
    )
    return output, fit


def alignment_error(
    mapped_user: np.ndarray, mapped_item: np.ndarray, old_user: np.ndarray, old_item: np.ndarray
) -> dict[str, float]:
    """Mean L2 distance per object (the notebook's 'align err'), for users, items and all objects."""
    user = np.linalg.norm(mapped_user.astype(np.float64) - old_user, axis=1)
    item = np.linalg.norm(mapped_item.astype(np.float64) - old_item, axis=1)
    return {"user": float(user.mean()), "item": float(item.mean()), "all": float(np.concatenate([user, item]).mean())}


class VersionChain:
    """One strategy's versions, trained one after another in this process.

    >>> chain = VersionChain(make_strategy("bc-aligner"), dataset, profile("default"))
    >>> v0 = chain.train_next()
    >>> v1 = chain.train_next()   # v1.transform is B_1, v1.user_ver0 what C_0 consumes
    """

    def __init__(
        self,
        strategy: Strategy,
        dataset: InteractionDataset,
        config: TrainingConfig,
        *,
        seed: int = 42,
        device: str | torch.device = "cpu",
        cache: ModelCache | None = None,
        history: History | None = None,
    ):
        strategy.check(config)
        self.strategy = strategy
        self.dataset = dataset
        self.config = config
        self.seed = seed
        self.device = resolve_device(device)
        self.cache = cache
        self.history = history or History()
        self.outputs: list[VersionOutput] = []

    @property
    def next_version(self) -> int:
        return self.history.num_versions

    def train_next(self, *, progress: bool = False) -> VersionOutput:
        output, fit = train_version(
            self.strategy,
            self.dataset,
            self.config,
            self.history,
            seed=self.seed,
            device=self.device,
            progress=progress,
            cache=self.cache,
        )
        self.history.models.append(fit.model)
        self.history.specs.append(fit.spec)
        if fit.transform is not None:
            self.history.transforms.append(fit.transform)
        self.outputs.append(output)
        return output
