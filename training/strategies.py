"""The eight embedding-update strategies of the paper, each selectable by name.

A strategy decides *what is trained* at version k and *which backward transform B_k* it ships:

==================== ================================================= ===============================
name                 version k >= 1                                    B_k published
==================== ================================================= ===============================
fix-m0               nothing; M_0 re-run on the new graph              identity (same model)
finetune-m0          M_{k-1} fine-tuned on the new data (M_0's arch)   identity (paper feeds it as is)
nobc                 fresh M_k, BPR only                               truncation [I 0] (what C_0 got)
posthoc-lin-sloss    the No-BC M_k; B_k fit afterwards, single-step    learned
posthoc-lin-mloss    the No-BC M_k; B_k fit afterwards, multi-step     learned
joint-notrans        fresh M_k, BPR + λ·MSE(z_k[:, :D_k-1], z_k-1)     truncation [I 0] (trained for)
joint-lin-sloss      fresh M_k and B_k jointly, single-step            learned
bc-aligner           fresh M_k and B_k jointly, multi-step             learned
bc-aligner-plus      ours: M_k grown from M_{k-1}, B_k from [I 0],     learned, refit by least squares
                     BC-Aligner's loss, aligned selection
==================== ================================================= ===============================

The first eight are the paper's; ``bc-aligner-plus`` is ours (:class:`BCAlignerPlus`, measured in
docs/RESULTS.md). Version 0 is the same for all: a fresh M_0 trained on BPR (identical across strategies for a
given seed, which the model cache exploits). Strategies are explicit-parameter objects in the
scikit-learn style: hyperparameters in ``__init__`` (only the joint ones take ``lam``), one
``fit_version`` call per version.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from itertools import pairwise
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_serializer
from torch import nn

from training.alignment import AlignmentNodes, JointAlignment, truncation_matrix
from training.backward_fit import refit_transform
from training.cache import CachedFit, ModelCache
from training.config import TrainingConfig
from training.data.dataset import InteractionDataset
from training.errors import ConfigError
from training.loop import FitResult, IntendedTask, embed, fit_model, fit_posthoc_transform
from training.models.factory import ModelSpec, build_model
from training.models.growth import grow
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
#: What `python -m training train` trains unless told otherwise: ours (docs/RESULTS.md says why).
DEFAULT_STRATEGY = "bc-aligner-plus"
logger = logging.getLogger(__name__)


class StrategySpec(BaseModel):
    """A strategy by name and parameters: what the training state stores."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrategyName
    lam: float | None = Field(None, ge=0, description="alignment weight λ (joint strategies; default 16)")
    # bc-aligner-plus only (None elsewhere): its components, each switchable for ablations.
    warm_start: bool | None = Field(None, description="grow M_{k-1} into M_k and start B_k at [I 0]")
    align_nodes: AlignmentNodes | None = Field(None, description="align every node at every step, or the batch's")
    refit: bool | None = Field(None, description="least-squares refit of B_k on the selected M_k")
    selection: Literal["recall", "aligned"] | None = Field(
        None, description="checkpoint: best recall (paper), or best recall among the well-aligned ones"
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
                model, spec, None, None, meta.val_recall, meta.selected_epoch, meta.epochs_run, meta.seconds,
                from_cache=True,
            )  # fmt: skip
        fit = fit_model(
            self.init_model(spec), self.task, self.config, self.rng("sample"),
            epochs=self.config.epochs, progress=self.progress, desc=self.desc("train"),
        )  # fmt: skip
        if cache is not None:
            meta = CachedFit(val_recall=fit.val_recall, selected_epoch=fit.selected_epoch, epochs_run=fit.epochs_run,
                             seconds=fit.seconds)  # fmt: skip
            cache.put(key, fit.model.state_dict(), meta)
        return StrategyFit.from_fit(fit, spec)

    def _fresh_model_key(self, spec: ModelSpec) -> str:
        """Everything a fresh BPR-only model depends on."""
        schedule = {"epochs", "batch_size", "learning_rate", "l2_weight", "eval_every", "recall_ks", "selection_k"}
        if self.config.patience is not None:  # keys of runs without patience stay what they were
            schedule |= {"patience", "select_after_epoch"}
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
    def from_fit(cls, fit: FitResult, spec: ModelSpec, transform=None, kind: TransformKind | None = None) -> StrategyFit:
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


class FixM0(Strategy):
    """Never update: M_0 keeps running on every new graph (the ideal-compatibility reference)."""

    name = "fix-m0"

    def update(self, ctx: VersionContext) -> StrategyFit:
        started = time.perf_counter()
        model, spec = ctx.history.models[0], ctx.history.specs[0]
        recall = ctx.task.evaluator.evaluate(*embed(model, ctx.task.graph))
        identity = np.eye(spec.dim, dtype=np.float32)
        return StrategyFit(model, spec, identity, "identity", recall, None, 0, time.perf_counter() - started,
                           same_model_as_version=0)  # fmt: skip


class FinetuneM0(Strategy):
    """Keep M_0's architecture; each version fine-tunes the previous one on the new data."""

    name = "finetune-m0"

    def update(self, ctx: VersionContext) -> StrategyFit:
        previous, spec = ctx.history.models[-1], ctx.history.specs[-1]
        model = build_model(spec).to(ctx.device)
        model.load_state_dict(previous.state_dict())
        fit = fit_model(
            model, ctx.task, ctx.config, ctx.rng("sample"),
            epochs=ctx.config.finetune_epochs, progress=ctx.progress, desc=ctx.desc("finetune"),
        )  # fmt: skip
        return StrategyFit.from_fit(fit, spec, np.eye(spec.dim, dtype=np.float32), "identity")


class NoBC(Strategy):
    """A fresh, larger model per version with no compatibility at all (the intended-task reference)."""

    name = "nobc"

    def check(self, config: TrainingConfig) -> None:
        _require_growing_dims(self.name, config)

    def update(self, ctx: VersionContext) -> StrategyFit:
        fit = ctx.train_fresh(ctx.spec(ctx.version))
        fit.transform = truncation_matrix(ctx.history.specs[-1].dim, fit.spec.dim)
        fit.transform_kind = "truncation"
        return fit


class _Posthoc(Strategy):
    multi_step: ClassVar[bool]

    def update(self, ctx: VersionContext) -> StrategyFit:
        fit = ctx.train_fresh(ctx.spec(ctx.version))  # the No-BC model of this version
        started = time.perf_counter()
        new = embed(fit.model, ctx.task.graph)
        old = ctx.targets(ctx.history.models[-1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed_for("posthoc-init"))
            weight, _ = fit_posthoc_transform(
                new, old, ctx.task, ctx.config, ctx.rng("posthoc-sample"),
                older_transforms=ctx.history.transforms, multi_step=self.multi_step,
                progress=ctx.progress, desc=ctx.desc("fit B"),
            )  # fmt: skip
        fit.transform, fit.transform_kind = weight, "learned"
        fit.seconds += time.perf_counter() - started
        return fit


class PosthocLinSLoss(_Posthoc):
    name = "posthoc-lin-sloss"
    multi_step = False


class PosthocLinMLoss(_Posthoc):
    name = "posthoc-lin-mloss"
    multi_step = True


class _Joint(Strategy):
    """Fresh M_k (the No-BC model's initial weights) and B_k trained together on BPR + λ·L_align."""

    kind: ClassVar[Literal["learned", "truncation"]]
    multi_step: ClassVar[bool]

    def __init__(self, lam: float = DEFAULT_LAMBDA):
        if not lam >= 0:
            raise ConfigError(f"{self.name}: lam must be >= 0, got {lam}")
        self.lam = float(lam)

    def get_params(self) -> dict[str, float]:
        return {"lam": self.lam}

    def update(self, ctx: VersionContext) -> StrategyFit:
        spec = ctx.spec(ctx.version)
        model = ctx.init_model(spec)  # same initial weights as the No-BC model of this version
        target_user, target_item = ctx.targets(ctx.history.models[-1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed_for("transform-init"))
            alignment = JointAlignment(
                kind=self.kind, new_dim=spec.dim, target_user=target_user, target_item=target_item, lam=self.lam,
                older_transforms=ctx.history.transforms if self.multi_step else (), multi_step=self.multi_step,
            ).to(ctx.device)  # fmt: skip
        fit = fit_model(
            model, ctx.task, ctx.config, ctx.rng("sample"), epochs=ctx.config.epochs,
            select_after=ctx.config.select_after_epoch, alignment=alignment, progress=ctx.progress,
            desc=ctx.desc(self.name),
        )  # fmt: skip
        return StrategyFit.from_fit(fit, spec, alignment.matrix(), self.kind)


class JointNoTrans(_Joint):
    name = "joint-notrans"
    kind = "truncation"
    multi_step = False

    def check(self, config: TrainingConfig) -> None:
        _require_growing_dims(self.name, config)


class JointLinSLoss(_Joint):
    name = "joint-lin-sloss"
    kind = "learned"
    multi_step = False


class BCAligner(_Joint):
    """Joint-Lin-MLoss: the paper's best method."""

    name = "bc-aligner"
    kind = "learned"
    multi_step = True


class BCAlignerPlus(_Joint):
    """Ours: BC-Aligner's loss, started aligned and kept aligned (docs/RESULTS.md measures each part).

    Why: on a CPU budget a fresh M_k never gets close to M_{k-1} through the alignment term, and the
    consumers of version 0 read every direction of the residual it leaves (docs/RESULTS.md,
    "What the consumers lose"). Changes to the paper's BC-Aligner, each switchable:

    * ``warm_start`` -- M_k is M_{k-1} grown into version k's architecture
      (:mod:`training.models.growth`) and B_k starts at [I 0], so training starts at zero alignment
      error instead of rediscovering M_{k-1}; falls back to a fresh model when the model cannot grow;
    * ``align_nodes`` -- ``"batch"`` (the default, the paper's: the batch's BPR triples) or ``"all"``
      (every node at every step, users and items weighing the same; measured worse in
      docs/RESULTS.md, kept as an option);
    * ``selection="aligned"`` -- the selected checkpoint has the best validation recall among those
      whose alignment is close to the best seen (:data:`training.loop.ALIGN_TOLERANCE`,
      :data:`training.loop.ALIGN_FLOOR`), instead of the best recall outright (``"recall"``, the
      paper's rule);
    * ``refit`` -- B_k is refit in closed form (least squares) on the selected M_k's embeddings
      (:mod:`training.backward_fit`); kept only if it lowers the alignment objective.

    With all four off it trains exactly what :class:`BCAligner` trains.
    """

    name = "bc-aligner-plus"
    kind = "learned"
    multi_step = True

    def __init__(
        self,
        lam: float = DEFAULT_LAMBDA,
        *,
        warm_start: bool = True,
        align_nodes: AlignmentNodes = "batch",
        refit: bool = True,
        selection: Literal["recall", "aligned"] = "aligned",
    ):
        super().__init__(lam)
        if align_nodes not in ("batch", "all"):
            raise ConfigError(f"{self.name}: align_nodes must be 'batch' or 'all', got {align_nodes!r}")
        if selection not in ("recall", "aligned"):
            raise ConfigError(f"{self.name}: selection must be 'recall' or 'aligned', got {selection!r}")
        self.warm_start = bool(warm_start)
        self.align_nodes: AlignmentNodes = align_nodes
        self.refit = bool(refit)
        self.selection = selection

    def get_params(self) -> dict:
        return {"lam": self.lam, "warm_start": self.warm_start, "align_nodes": self.align_nodes, "refit": self.refit,
                "selection": self.selection}  # fmt: skip

    def update(self, ctx: VersionContext) -> StrategyFit:
        spec = ctx.spec(ctx.version)
        model = ctx.init_model(spec)
        previous = ctx.history.models[-1]
        target_user, target_item = ctx.targets(previous)
        initial = None
        if self.warm_start:
            growth = grow(previous, model, ctx.task.graph)
            if growth is None:
                logger.warning("%s: version %d starts from a fresh model (M_%d cannot grow into it)",
                               self.name, ctx.version, ctx.version - 1)  # fmt: skip
            else:
                logger.info("%s: M_%d grown from M_%d (%d -> %d dims), max deviation %.2e",
                            self.name, ctx.version, ctx.version - 1, growth.old_dim, growth.new_dim, growth.max_error)  # fmt: skip
                initial = truncation_matrix(growth.old_dim, growth.new_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed_for("transform-init"))
            alignment = JointAlignment(
                kind="learned", new_dim=spec.dim, target_user=target_user, target_item=target_item, lam=self.lam,
                older_transforms=ctx.history.transforms, multi_step=True, nodes=self.align_nodes, initial=initial,
            ).to(ctx.device)  # fmt: skip
        fit = fit_model(
            model, ctx.task, ctx.config, ctx.rng("sample"), epochs=ctx.config.epochs,
            select_after=ctx.config.select_after_epoch, alignment=alignment,
            aligned_selection=self.selection == "aligned",
            refit=self.refit, progress=ctx.progress, desc=ctx.desc(self.name),
        )  # fmt: skip
        weight = alignment.matrix()
        if self.refit:
            new = tuple(z.cpu().numpy() for z in embed(fit.model, ctx.task.graph))
            old = (target_user.cpu().numpy(), target_item.cpu().numpy())
            weight, before, after = refit_transform(weight, new, old, ctx.history.transforms)
            logger.info("%s: version %d B_k refit, alignment objective %.5f -> %.5f", self.name, ctx.version, before, after)
        return StrategyFit.from_fit(fit, spec, weight, "learned")


_CLASSES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (FixM0, FinetuneM0, NoBC, PosthocLinSLoss, PosthocLinMLoss, JointNoTrans, JointLinSLoss, BCAligner,
                BCAlignerPlus)  # fmt: skip
}
#: Parameters only :class:`BCAlignerPlus` takes.
PLUS_OPTIONS: tuple[str, ...] = ("warm_start", "align_nodes", "refit", "selection")


def make_strategy(name: str, *, lam: float | None = None, **options) -> Strategy:
    """A strategy by name (paper-code names accepted); ``lam`` only for the joint strategies, the
    :data:`PLUS_OPTIONS` only for ``bc-aligner-plus`` (``None`` means the default)."""
    canonical = ALIASES.get(name, name)
    if canonical not in _CLASSES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGY_NAMES)}")
    cls = _CLASSES[canonical]
    unknown = sorted(set(options) - set(PLUS_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown strategy option(s) {', '.join(unknown)}; known: {', '.join(PLUS_OPTIONS)}")
    given = {k: v for k, v in options.items() if v is not None}
    if given and cls is not BCAlignerPlus:
        raise ConfigError(f"strategy {canonical!r} takes no {', '.join(sorted(given))} (bc-aligner-plus options)")
    if issubclass(cls, _Joint):
        return cls(DEFAULT_LAMBDA if lam is None else lam, **given)
    if lam is not None:
        raise ConfigError(f"strategy {canonical!r} has no alignment loss, so it takes no lam")
    return cls()


def parse_strategy_spec(text: str) -> StrategySpec:
    """``name[:key=value,...]`` -> a validated spec, e.g. ``bc-aligner-plus:warm_start=false,lam=64``
    (how the reproduction and benchmarks/compat.py name the variants of an ablation)."""
    name, _, rest = text.strip().partition(":")
    params: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"strategy option {item!r} in {text!r} is not key=value")
        low = value.strip().lower()
        params[key.strip()] = True if low == "true" else False if low == "false" else _number_or_text(value.strip())
    lam = params.pop("lam", None)
    if lam is not None and not isinstance(lam, float):
        raise ConfigError(f"lam must be a number in {text!r}")
    return make_strategy(name, lam=lam, **params).spec()  # type: ignore[arg-type]


def _number_or_text(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def strategy_from_spec(spec: StrategySpec) -> Strategy:
    return make_strategy(spec.name, lam=spec.lam, **{k: getattr(spec, k) for k in PLUS_OPTIONS})


def _require_growing_dims(name: str, config: TrainingConfig) -> None:
    shrinking = [(k, a, b) for k, (a, b) in enumerate(pairwise(config.dims), start=1) if b < a]
    if shrinking:
        k, a, b = shrinking[0]
        raise ConfigError(
            f"{name} publishes B_k = [I 0] (the first D_(k-1) coordinates), which needs D_k >= D_(k-1); "
            f"version {k} has D={b} < {a}"
        )
