"""The paper's eight strategies (Hu et al., KDD 2022; the authors' code names in parentheses)."""

from __future__ import annotations

import time
from itertools import pairwise
from typing import ClassVar, Literal

import numpy as np
import torch

from training.alignment import JointAlignment, truncation_matrix
from training.config import TrainingConfig
from training.errors import ConfigError
from training.loop import embed, fit_model, fit_posthoc_transform
from training.models.factory import build_model
from training.strategies.base import DEFAULT_LAMBDA, Strategy, StrategyFit, VersionContext


class FixM0(Strategy):
    """Never update: M_0 keeps running on every new graph (the ideal-compatibility reference)."""

    name = "fix-m0"

    def update(self, ctx: VersionContext) -> StrategyFit:
        started = time.perf_counter()
        model, spec = ctx.history.models[0], ctx.history.specs[0]
        recall = ctx.task.evaluator.evaluate(*embed(model, ctx.task.graph))
        identity = np.eye(spec.dim, dtype=np.float32)
        return StrategyFit(
            model, spec, identity, "identity", recall, None, 0, time.perf_counter() - started, same_model_as_version=0
        )


class FinetuneM0(Strategy):
    """Keep M_0's architecture; each version fine-tunes the previous one on the new data."""

    name = "finetune-m0"

    def update(self, ctx: VersionContext) -> StrategyFit:
        previous, spec = ctx.history.models[-1], ctx.history.specs[-1]
        model = build_model(spec).to(ctx.device)
        model.load_state_dict(previous.state_dict())
        fit = fit_model(
            model,
            ctx.task,
            ctx.config,
            ctx.rng("sample"),
            epochs=ctx.config.finetune_epochs,
            progress=ctx.progress,
            desc=ctx.desc("finetune"),
        )
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
                new,
                old,
                ctx.task,
                ctx.config,
                ctx.rng("posthoc-sample"),
                older_transforms=ctx.history.transforms,
                multi_step=self.multi_step,
                progress=ctx.progress,
                desc=ctx.desc("fit B"),
            )
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
                kind=self.kind,
                new_dim=spec.dim,
                target_user=target_user,
                target_item=target_item,
                lam=self.lam,
                older_transforms=ctx.history.transforms if self.multi_step else (),
                multi_step=self.multi_step,
            ).to(ctx.device)
        fit = fit_model(
            model,
            ctx.task,
            ctx.config,
            ctx.rng("sample"),
            epochs=ctx.config.epochs,
            select_after=ctx.config.select_after_epoch,
            alignment=alignment,
            progress=ctx.progress,
            desc=ctx.desc(self.name),
        )
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


def _require_growing_dims(name: str, config: TrainingConfig) -> None:
    shrinking = [(k, a, b) for k, (a, b) in enumerate(pairwise(config.dims), start=1) if b < a]
    if shrinking:
        k, a, b = shrinking[0]
        raise ConfigError(
            f"{name} publishes B_k = [I 0] (the first D_(k-1) coordinates), which needs D_k >= D_(k-1); "
            f"version {k} has D={b} < {a}"
        )
