"""A version chain persisted in a work directory, so version k+1 can be trained later (another day,
another process) from what version k left behind.

Layout::

    <workdir>/training_state/state.json              TrainingState (data, strategy, config, versions)
    <workdir>/training_state/v0003-model.pt           M_3 state_dict
    <workdir>/training_state/v0003-transform.pt       {"weight": B_3}
    <workdir>/training_state/v0003-embeddings.pt      {"user", "item", "user_ver0", "item_ver0"}

Files are written before the state that references them, so an interrupted run leaves the
previous state in force. Training holds an exclusive lock on the state directory.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from feast_bc.atomic import exclusive_lock
from training.cache import ModelCache
from training.chain import VersionOutput, resolve_device, train_version
from training.config import TrainingConfig
from training.data.config import DataConfig, SyntheticData, absolute, load_dataset
from training.data.dataset import InteractionDataset
from training.data.splits import split_version, version_splits
from training.errors import StateError
from training.models.factory import build_model
from training.publish import PublishResult
from training.record import TrainedVersion
from training.state import (
    STATE_FILENAME,
    PublishRecord,
    TrainingState,
    VersionState,
    load_tensors,
    read_state,
    save_tensors,
    write_state,
)
from training.strategies import History, Strategy, StrategySpec, strategy_from_spec

STATE_DIRNAME = "training_state"


class TrainingRun:
    """One strategy's version chain in ``<workdir>/training_state``."""

    def __init__(self, workdir: str | Path, state: TrainingState):
        self.workdir = Path(workdir).absolute()
        self.state = state
        self.strategy: Strategy = strategy_from_spec(state.strategy)
        self._dataset: InteractionDataset | None = None

    @property
    def state_dir(self) -> Path:
        return self.workdir / STATE_DIRNAME

    # ------------------------------------------------------------------------- lifecycle
    @classmethod
    def exists(cls, workdir: str | Path) -> bool:
        return (Path(workdir) / STATE_DIRNAME / STATE_FILENAME).is_file()

    @classmethod
    def create(
        cls,
        workdir: str | Path,
        *,
        strategy: Strategy | StrategySpec,
        config: TrainingConfig,
        data: DataConfig | None = None,
        seed: int = 42,
        repo: str | Path | None = None,
        project: str | None = None,
    ) -> TrainingRun:
        """Start a chain: record data, strategy, config and seed (nothing is trained yet)."""
        if cls.exists(workdir):
            existing = read_state(Path(workdir) / STATE_DIRNAME)
            raise StateError(
                f"{workdir} already holds a training state ({existing.strategy.name}, "
                f"{len(existing.versions)} versions); open it instead, or use another work directory"
            )
        spec = strategy.spec() if isinstance(strategy, Strategy) else strategy
        strategy_from_spec(spec).check(config)
        data = absolute(data or SyntheticData())
        dataset = load_dataset(data)
        version_splits(dataset, config.time_slices)  # every version must be splittable before we start
        state = TrainingState(
            data=data,
            dataset_name=dataset.name,
            dataset_fingerprint=dataset.fingerprint(),
            strategy=spec,
            config=config,
            seed=seed,
            repo=str(Path(repo).absolute()) if repo is not None else None,
            project=project,
        )
        run = cls(workdir, state)
        run._dataset = dataset
        run.state_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(run.state_dir / ".lock"):
            if cls.exists(workdir):
                raise StateError(f"{workdir} was initialised concurrently by another process")
            write_state(run.state_dir, state)
        return run

    @classmethod
    def open(cls, workdir: str | Path) -> TrainingRun:
        return cls(workdir, read_state(Path(workdir).absolute() / STATE_DIRNAME))

    # ------------------------------------------------------------------------- queries
    @property
    def next_version(self) -> int:
        return len(self.state.versions)

    @property
    def config(self) -> TrainingConfig:
        return self.state.config

    @property
    def dataset(self) -> InteractionDataset:
        """The chain's data, reloaded and checked against the fingerprint taken at version 0."""
        if self._dataset is None:
            dataset = load_dataset(self.state.data)
            if dataset.fingerprint() != self.state.dataset_fingerprint:
                raise StateError(
                    f"the data described by {self.state.data.model_dump_json()} changed since this chain started "
                    f"(fingerprint {dataset.fingerprint()[:12]}..., recorded {self.state.dataset_fingerprint[:12]}...); "
                    "a version chain needs the same interaction timeline for every version"
                )
            self._dataset = dataset
        return self._dataset

    def history(self, device: torch.device | str = "cpu") -> History:
        """M_0..M_{k-1} (eval mode) and B_1..B_{k-1}, loaded and verified from the checkpoints."""
        history = History()
        for v in self.state.versions:
            model = build_model(v.model).to(device)
            model.load_state_dict(load_tensors(self.state_dir, v.checkpoint, device))
            model.eval()
            history.models.append(model)
            history.specs.append(v.model)
            if v.transform is not None:
                history.transforms.append(load_tensors(self.state_dir, v.transform)["weight"].numpy())
        return history

    def output(self, version: int) -> VersionOutput:
        """A trained version's output, reloaded from the state directory."""
        v = self._version_state(version)
        tensors = load_tensors(self.state_dir, v.embeddings)
        transform = None if v.transform is None else load_tensors(self.state_dir, v.transform)["weight"].numpy()
        dataset = self.dataset
        split = split_version(dataset, v.time_train, v.time_next, version=v.version)
        return VersionOutput(
            record=TrainedVersion.model_validate(v.model_dump(include=set(TrainedVersion.model_fields))),
            strategy=self.state.strategy.name,
            split=split,
            user_ids=dataset.user_ids[: v.num_users],
            item_ids=dataset.item_ids[: v.num_items],
            user_embeddings=tensors["user"].numpy(),
            item_embeddings=tensors["item"].numpy(),
            transform=transform,
            user_ver0=tensors["user_ver0"].numpy(),
            item_ver0=tensors["item_ver0"].numpy(),
        )

    def _version_state(self, version: int) -> VersionState:
        if not 0 <= version < len(self.state.versions):
            raise StateError(
                f"version {version} is not trained in {self.workdir} "
                f"(trained: {', '.join(str(v.version) for v in self.state.versions) or 'none'})"
            )
        return self.state.versions[version]

    # ------------------------------------------------------------------------- training
    def train_next_version(
        self,
        *,
        device: str | torch.device = "cpu",
        progress: bool = False,
        cache: ModelCache | None = None,
        expected_version: int | None = None,
    ) -> VersionOutput:
        """Train version ``next_version`` and persist it (checkpoint, B_k, embeddings, metrics)."""
        dev = resolve_device(device)
        with exclusive_lock(self.state_dir / ".lock"):
            self.state = read_state(self.state_dir)  # another process may have trained meanwhile
            k = self.next_version
            if expected_version is not None and expected_version != k:
                raise StateError(f"asked to train version {expected_version}, but the next version here is {k}")
            output, fit = train_version(
                self.strategy,
                self.dataset,
                self.config,
                self.history(dev),
                seed=self.state.seed,
                device=dev,
                progress=progress,
                cache=cache,
            )
            if fit.same_model_as_version is not None:
                checkpoint = self.state.versions[fit.same_model_as_version].checkpoint
            else:
                checkpoint = save_tensors(self.state_dir, f"v{k:04d}-model.pt", fit.model.state_dict())
            transform = None
            if output.transform is not None:
                transform = save_tensors(
                    self.state_dir, f"v{k:04d}-transform.pt", {"weight": _tensor(output.transform)}
                )
            embeddings = save_tensors(
                self.state_dir,
                f"v{k:04d}-embeddings.pt",
                {
                    "user": _tensor(output.user_embeddings),
                    "item": _tensor(output.item_embeddings),
                    "user_ver0": _tensor(output.user_ver0),
                    "item_ver0": _tensor(output.item_ver0),
                },
            )
            record = VersionState(
                version=k,
                time_train=output.split.time_train,
                time_next=output.split.time_next,
                num_users=output.split.num_users,
                num_items=output.split.num_items,
                model=output.spec,
                checkpoint=checkpoint,
                transform=transform,
                transform_kind=output.transform_kind,
                embeddings=embeddings,
                val_recall=output.val_recall,
                alignment_error=output.alignment_error,
                selected_epoch=output.selected_epoch,
                epochs_run=output.epochs_run,
                train_seconds=output.train_seconds,
                total_seconds=output.total_seconds,
                from_cache=output.from_cache,
                trained_at=datetime.now(UTC),
            )
            self.state = self.state.model_copy(update={"versions": [*self.state.versions, record]})
            write_state(self.state_dir, self.state)
        return output

    # ------------------------------------------------------------------------- publishing
    def publish(
        self, version: int | None = None, repo: str | Path | None = None, *, apply: bool = True, force: bool = False
    ) -> PublishResult:
        """Publish a trained version (default: the latest) into ``repo`` (default: the remembered
        one), apply the repo to Feast, and record the publish in the state. ``force`` publishes past
        the repo's publish gate (recorded in the manifests)."""
        from training.publish import publish_output

        target = repo if repo is not None else self.state.repo
        if target is None:
            raise StateError("no repo to publish into: pass one (it is remembered for later versions)")
        if repo is not None:
            self.set_publish_target(repo, self.state.project)
        k = self.next_version - 1 if version is None else version
        result = publish_output(self.output(k), target, project=self.state.project, apply=apply, force=force)
        self.mark_published(k, result.repo, [*result.published, *result.skipped])
        return result

    def mark_published(self, version: int, repo: Path, families: list[str]) -> None:
        with exclusive_lock(self.state_dir / ".lock"):
            self.state = read_state(self.state_dir)
            v = self._version_state(version)
            record = PublishRecord(repo=str(Path(repo).absolute()), published_at=datetime.now(UTC), families=families)
            versions = list(self.state.versions)
            versions[version] = v.model_copy(update={"published": record})
            self.state = self.state.model_copy(update={"versions": versions})
            write_state(self.state_dir, self.state)

    def set_publish_target(self, repo: str | Path, project: str | None) -> None:
        """Remember ``repo`` (and its Feast project) for later publishes; nothing is written when
        the state already names them."""
        target = str(Path(repo).absolute())
        if (self.state.repo, self.state.project) == (target, project):
            return
        with exclusive_lock(self.state_dir / ".lock"):
            self.state = read_state(self.state_dir).model_copy(update={"repo": target, "project": project})
            write_state(self.state_dir, self.state)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
