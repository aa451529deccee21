"""``nobc-warm``: the No-BC reference with BC-Aligner+'s warm start (what the warm start alone gives)."""

from __future__ import annotations

import logging

from training.backward_fit import least_squares_transform
from training.loop import embed, fit_model
from training.models.growth import grow
from training.strategies.base import Strategy, StrategyFit, VersionContext

logger = logging.getLogger(__name__)


class NoBCWarm(Strategy):
    """The No-BC reference with BC-Aligner+'s warm start: M_k grown from M_{k-1}, BPR only.

    Why: BC-Aligner+'s M_k continues M_{k-1}'s training, so part of any intended gain over No-BC
    may be that extra training and not the method. This strategy takes the same warm start
    (:func:`training.models.growth.grow`; a fresh model where it cannot grow) and trains it on the
    intended task alone, selecting by validation recall after ``select_after_epoch`` (the paper's
    rule); its B_k is the least-squares fit of the selected M_k onto M_{k-1} (post-hoc, so its
    consumers get the best linear map there is). It trains exactly what
    ``bc-aligner-plus:lam=0,warm_start=true,selection=recall,intended_floor=0`` trains (a test holds it to that),
    without computing an alignment it does not use.
    """

    name = "nobc-warm"

    def update(self, ctx: VersionContext) -> StrategyFit:
        spec = ctx.spec(ctx.version)
        previous = ctx.history.models[-1]
        model = ctx.init_model(spec)
        if grow(previous, model, ctx.task.graph) is None:
            logger.warning(
                "%s: version %d starts from a fresh model (M_%d cannot grow into it)",
                self.name,
                ctx.version,
                ctx.version - 1,
            )
        c = ctx.config
        fit = fit_model(
            model,
            ctx.task,
            c,
            ctx.rng("sample"),
            epochs=c.epochs,
            select_after=c.select_after_epoch,
            progress=ctx.progress,
            desc=ctx.desc(self.name),
        )
        new = tuple(z.cpu().numpy() for z in embed(fit.model, ctx.task.graph))
        old = tuple(z.cpu().numpy() for z in ctx.targets(previous))
        weight = least_squares_transform(*new, *old)
        return StrategyFit.from_fit(fit, spec, weight, "learned")
