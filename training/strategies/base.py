"""What every strategy shares: names, the persisted spec, a version's context, the fit it returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_serializer
from torch import nn

from training.alignment import AlignmentNodes
from training.cache import CachedFit, ModelCache
from training.config import TrainingConfig
from training.data.dataset import InteractionDataset
from training.loop import FitResult, IntendedTask, embed, fit_model
from training.models.factory import ModelSpec, build_model
from training.record import TransformKind

StrategyName = Literal[
    "fix-m0",
    "finetune-m0",
    "nobc",
    "posthoc-lin-sloss",
    "posthoc-lin-mloss",
    "joint-notrans",
    "joint-lin-sloss",
    "bc-aligner",
    "bc-aligner-plus",
    "nobc-warm",
]
STRATEGY_NAMES: tuple[str, ...] = StrategyName.__args__  # type: ignore[attr-defined]
#: Names used by the paper's code, accepted as aliases.
ALIASES = {
    "joint-lin-mloss": "bc-aligner",
    "joint-linear-mloss": "bc-aligner",
    "joint-linear-sloss": "joint-lin-sloss",
    "posthoc-linear-sloss": "posthoc-lin-sloss",
    "posthoc-linear-mloss": "posthoc-lin-mloss",
}
DEFAULT_LAMBDA = 16.0
#: bc-aligner-plus keeps at least this fraction of a fresh model's validation recall (issue 21's
#: intended bar: ours >= 99% of No-BC at every version; it was 0.97, docs/RESULTS.md says what changed).
DEFAULT_INTENDED_FLOOR = 0.99
#: What `python -m training train` trains unless told otherwise: ours (docs/RESULTS.md says why).
DEFAULT_STRATEGY = "bc-aligner-plus"
#: Parameters only ``bc-aligner-plus`` takes (``None`` in the spec of every other strategy).
PLUS_OPTIONS: tuple[str, ...] = (
    "warm_start",
    "align_nodes",
    "refit",
    "selection",
    "intended_floor",
    "realign_lr_scale",
)
#: bc-aligner-plus's re-alignment (below the intended floor) runs at this fraction of the profile's
#: learning rate. Why: at the full rate its first epoch leaves the floor, so the walk from the start
#: towards M_{k-1} is never taken (synthetic-large v1, from the joint run's epoch-3 checkpoint:
#: total -2.01 at 1.0, -0.88 at 0.3; docs/RESULTS.md, "the larger catalogue").
DEFAULT_REALIGN_LR_SCALE = 0.3


class StrategySpec(BaseModel):
    """A strategy by name and parameters: what the training state stores."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrategyName
    lam: float | None = Field(None, ge=0, description="alignment weight λ (joint strategies; default 16)")
    # bc-aligner-plus only (None elsewhere): its components, each switchable for ablations.
    warm_start: bool | None = Field(
        None, description="grow M_{k-1} into M_k and start B_k at [I 0] (unset: by model, warm for PinSAGE only)"
    )
    align_nodes: AlignmentNodes | None = Field(None, description="align every node at every step, or the batch's")
    refit: bool | None = Field(None, description="least-squares refit of B_k on the selected M_k")
    selection: Literal["recall", "aligned"] | None = Field(
        None,
        description="checkpoint: best recall (paper), or best recall among the well-aligned ones "
        "(unset: aligned with a warm start, recall with a fresh one)",
    )
    intended_floor: float | None = Field(
        None,
        ge=0,
        le=1,
        description="keep at least this fraction of a fresh model's validation recall (0: no check)",
    )
    realign_lr_scale: float | None = Field(
        None, gt=0, le=1, description="the re-alignment's learning rate as a fraction of the profile's"
    )

    @model_serializer(mode="wrap")
    def _drop_unset_options(self, handler):
        """States written before bc-aligner-plus existed read the same: options it lacks are not written."""
        data = handler(self)
        return {k: v for k, v in data.items() if not (k in PLUS_OPTIONS and v is None)}


@dataclass
class History:
    """What earlier versions of the same chain left behind.

    ``models[j]`` is M_j (eval mode) with architecture ``specs[j]``; ``transforms[j - 1]`` is the
    published B_j, shape (D_{j-1}, D_j).
    """

    models: list[nn.Module] = field(default_factory=list)
    specs: list[ModelSpec] = field(default_factory=list)
    transforms: list[np.ndarray] = field(default_factory=list)

    @property
    def num_versions(self) -> int:
        return len(self.models)


@dataclass
class VersionContext:
    """Everything a strategy needs to train version ``version``."""

    version: int
    dataset: InteractionDataset
    task: IntendedTask
    config: TrainingConfig
    history: History
    seed: int
    device: torch.device
    progress: bool = False
    cache: ModelCache | None = None

    def seed_for(self, purpose: str) -> int:
        """Seeds derived from (seed, version, purpose): equal across strategies for the same purpose."""
        entropy = [self.seed, self.version, *purpose.encode()]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    def rng(self, purpose: str) -> np.random.Generator:
        return np.random.default_rng(self.seed_for(purpose))

    def spec(self, version: int) -> ModelSpec:
        c = self.config
        return ModelSpec.for_dataset(c.model, c.dims[version], c.layers[version], self.dataset)

    def init_model(self, spec: ModelSpec) -> nn.Module:
        """A freshly initialised model; the same spec and version give the same weights."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed_for("init"))
            return build_model(spec).to(self.device)

    def targets(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Alignment targets: a (frozen) older model re-run on this version's graph."""
        return embed(model, self.task.graph)

    def desc(self, what: str) -> str:
        return f"v{self.version} {what}"

    def train_fresh(self, spec: ModelSpec) -> StrategyFit:
        """BPR-only training of a fresh model: every strategy's version 0, the No-BC models, and the
        models the post-hoc strategies align. Same inputs, same model: with a cache it is trained once."""
        cache = self.cache
        key = self._fresh_model_key(spec) if cache is not None else ""
        hit = cache.get(key, self.device) if cache is not None else None
        if hit is not None:
            state, meta = hit
            model = build_model(spec).to(self.device)
            model.load_state_dict(state)
            model.eval()
            return StrategyFit(
                model,
                spec,
                None,
                None,
                meta.val_recall,
                meta.selected_epoch,
                meta.epochs_run,
                meta.seconds,
                from_cache=True,
            )
        fit = fit_model(
            self.init_model(spec),
            self.task,
            self.config,
            self.rng("sample"),
            epochs=self.config.epochs,
            progress=self.progress,
            desc=self.desc("train"),
        )
        if cache is not None:
            meta = CachedFit(
                val_recall=fit.val_recall,
                selected_epoch=fit.selected_epoch,
                epochs_run=fit.epochs_run,
                seconds=fit.seconds,
            )
            cache.put(key, fit.model.state_dict(), meta)
        return StrategyFit.from_fit(fit, spec)

    def _fresh_model_key(self, spec: ModelSpec) -> str:
        """Everything a fresh BPR-only model depends on."""
        schedule = {"epochs", "batch_size", "learning_rate", "l2_weight", "eval_every", "recall_ks", "selection_k"}
        if self.config.patience is not None:  # keys of runs without patience stay what they were
            schedule |= {"patience", "select_after_epoch"}
        if self.config.negatives != 1:
            schedule |= {"negatives"}
        return ModelCache.key(
            {
                "dataset": self.dataset.fingerprint(),
                "version": self.version,
                "slices": [self.task.split.time_train, self.task.split.time_next],
                "spec": spec.model_dump(),
                "schedule": self.config.model_dump(include=schedule),
                "seed": self.seed,
                "device": self.device.type,
                "torch": torch.__version__,
            }
        )


@dataclass
class StrategyFit:
    """A strategy's result for one version: the selected model and its B_k."""

    model: nn.Module  # eval mode
    spec: ModelSpec
    transform: np.ndarray | None  # B_k (D_{k-1}, D_k); None at version 0
    transform_kind: TransformKind | None
    val_recall: dict[int, float]
    selected_epoch: int | None  # None when nothing was trained (Fix-M0 after version 0)
    epochs_run: int
    seconds: float
    from_cache: bool = False
    #: Set when the model *is* an earlier version's (Fix-M0): no new checkpoint is needed.
    same_model_as_version: int | None = None

    @classmethod
    def from_fit(
        cls, fit: FitResult, spec: ModelSpec, transform=None, kind: TransformKind | None = None
    ) -> StrategyFit:
        return cls(fit.model, spec, transform, kind, fit.val_recall, fit.selected_epoch, fit.epochs_run, fit.seconds)


class Strategy(ABC):
    name: ClassVar[str]

    def get_params(self) -> dict[str, float]:
        return {}

    def spec(self) -> StrategySpec:
        return StrategySpec(name=self.name, **self.get_params())  # type: ignore[arg-type]

    def check(self, config: TrainingConfig) -> None:  # noqa: B027 - a hook: most strategies take any config
        """Refuse configurations this strategy cannot train (before any work is done)."""

    def fit_version(self, ctx: VersionContext) -> StrategyFit:
        if ctx.version == 0:
            return ctx.train_fresh(ctx.spec(0))
        return self.update(ctx)

    @abstractmethod
    def update(self, ctx: VersionContext) -> StrategyFit:
        """Version k >= 1."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"
