"""Ours: ``bc-aligner-plus``, BC-Aligner started aligned and kept aligned."""

from __future__ import annotations

import logging
from typing import Literal

import torch

from training.alignment import AlignmentNodes, JointAlignment, truncation_matrix
from training.backward_fit import refit_transform
from training.errors import ConfigError
from training.loop import embed, fit_model
from training.models.growth import grow
from training.strategies.base import DEFAULT_LAMBDA, StrategyFit, VersionContext
from training.strategies.paper import _Joint

logger = logging.getLogger(__name__)


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
        return {
            "lam": self.lam,
            "warm_start": self.warm_start,
            "align_nodes": self.align_nodes,
            "refit": self.refit,
            "selection": self.selection,
        }

    def update(self, ctx: VersionContext) -> StrategyFit:
        spec = ctx.spec(ctx.version)
        model = ctx.init_model(spec)
        previous = ctx.history.models[-1]
        target_user, target_item = ctx.targets(previous)
        initial = None
        if self.warm_start:
            growth = grow(previous, model, ctx.task.graph)
            if growth is None:
                logger.warning(
                    "%s: version %d starts from a fresh model (M_%d cannot grow into it)",
                    self.name,
                    ctx.version,
                    ctx.version - 1,
                )
            else:
                logger.info(
                    "%s: M_%d grown from M_%d (%d -> %d dims), max deviation %.2e",
                    self.name,
                    ctx.version,
                    ctx.version - 1,
                    growth.old_dim,
                    growth.new_dim,
                    growth.max_error,
                )
                initial = truncation_matrix(growth.old_dim, growth.new_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed_for("transform-init"))
            alignment = JointAlignment(
                kind="learned",
                new_dim=spec.dim,
                target_user=target_user,
                target_item=target_item,
                lam=self.lam,
                older_transforms=ctx.history.transforms,
                multi_step=True,
                nodes=self.align_nodes,
                initial=initial,
            ).to(ctx.device)
        fit = fit_model(
            model,
            ctx.task,
            ctx.config,
            ctx.rng("sample"),
            epochs=ctx.config.epochs,
            select_after=ctx.config.select_after_epoch,
            alignment=alignment,
            aligned_selection=self.selection == "aligned",
            refit=self.refit,
            progress=ctx.progress,
            desc=ctx.desc(self.name),
        )
        weight = alignment.matrix()
        if self.refit:
            new = tuple(z.cpu().numpy() for z in embed(fit.model, ctx.task.graph))
            old = (target_user.cpu().numpy(), target_item.cpu().numpy())
            weight, before, after = refit_transform(weight, new, old, ctx.history.transforms)
            logger.info(
                "%s: version %d B_k refit, alignment objective %.5f -> %.5f", self.name, ctx.version, before, after
            )
        return StrategyFit.from_fit(fit, spec, weight, "learned")
