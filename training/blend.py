"""Weight-space interpolation of two models of one version: the jointly trained M_k and the fresh one.

Why: when bc-aligner-plus's joint M_k falls below the intended floor, the fresh (No-BC) M_k reaches
it but is far from M_{k-1}'s space. For models whose output is linear in their parameters
(:class:`training.models.mf.MatrixFactorization` and LightGCN: the output is the tables, smoothed
by a fixed graph), the model with weights a·joint + (1-a)·fresh outputs exactly a·z_joint +
(1-a)·z_fresh on any graph, so a blend is a real model M_k that later versions can re-run for their
alignment targets, and a walk along a traces the trade between the two: recall falls from the fresh
model's and the alignment residual from the fresh model's towards the joint one's (ml-100k v3, the
default profile: a = 0.1 keeps 99.1% of the fresh recall at residual 0.144 vs 0.160; a = 0.4 keeps
97.8% at 0.078). The weight-space ensembles of WiSE-FT (Wortsman et al., CVPR 2022) make the same
trade between a fine-tuned and an original model.

The blend only picks a starting point: every candidate is evaluated (validation recall, the
least-squares alignment residual), and the most aligned one whose recall reaches the floor is kept.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from training.backward_fit import least_squares_transform, relative_residual
from training.loop import IntendedTask, embed
from training.models.mf import MatrixFactorization

logger = logging.getLogger(__name__)

#: The weights a of the joint model tried, most aligned first (a = 0 is the fresh model itself).
BLEND_WEIGHTS: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def output_is_linear(model: nn.Module) -> bool:
    """Whether the model's output is linear in its parameters (blends are exact models)."""
    return isinstance(model, MatrixFactorization)


@dataclass(frozen=True)
class Blend:
    """One evaluated blend: a·joint + (1-a)·fresh."""

    weight: float
    state: dict[str, torch.Tensor]
    recall: float
    residual: float  # relative residual of the least-squares B_k (training.backward_fit)


def best_blend(
    joint: nn.Module,
    fresh: nn.Module,
    task: IntendedTask,
    targets: tuple[torch.Tensor, torch.Tensor],
    *,
    floor: float,
    k: int,
    weights: tuple[float, ...] = BLEND_WEIGHTS,
) -> Blend | None:
    """The most aligned blend whose validation Recall@``k`` reaches ``floor``; None when none does
    (or the models are not linear in their parameters, or not of one kind)."""
    if not (output_is_linear(joint) and output_is_linear(fresh)) or type(joint) is not type(fresh):
        return None
    joint_state, fresh_state = joint.state_dict(), fresh.state_dict()  # one spec: the same tables
    probe = copy.deepcopy(joint)
    best: Blend | None = None
    for weight in weights:
        state = {n: weight * joint_state[n] + (1 - weight) * fresh_state[n] for n in joint_state}
        candidate = evaluate_start(probe, state, task, targets, k=k, weight=weight)
        logger.debug("blend a=%.1f: Recall@%d %.4f, residual %.4f", weight, k, candidate.recall, candidate.residual)
        if candidate.recall >= floor and (best is None or candidate.residual < best.residual):
            best = candidate
    return best


def evaluate_start(
    probe: nn.Module,
    state: dict[str, torch.Tensor],
    task: IntendedTask,
    targets: tuple[torch.Tensor, torch.Tensor],
    *,
    k: int,
    weight: float = 1.0,
) -> Blend:
    """``state`` loaded into ``probe`` (overwritten) and measured as a re-alignment start: validation
    Recall@``k`` and the least-squares residual to ``targets`` (any model kind, not only linear ones)."""
    probe.load_state_dict(state)
    z_user, z_item = embed(probe, task.graph)
    recall = task.evaluator.evaluate(z_user, z_item)[k]
    new = (z_user.cpu().numpy(), z_item.cpu().numpy())
    old = tuple(z.cpu().numpy() for z in targets)
    residual = relative_residual(least_squares_transform(*new, *old), *new, *old)
    return Blend(weight, state, recall, residual)
