"""Function-preserving warm starts: grow M_{k-1} into version k's (wider, deeper) architecture.

Why: a freshly initialised M_k starts with no relation to M_{k-1}; joint training must then
*rediscover* M_{k-1}'s features through the alignment term, and on a CPU budget it does not get
there (docs/RESULTS.md: BC-Aligner's version-0 vectors keep a 20-40% residual, and the consumers
lose 8%). Growing M_{k-1} instead gives a model whose first D_{k-1} output coordinates *are*
M_{k-1}'s output, so B_k = [I 0] starts at (almost) zero alignment error; joint training then
spends its budget on the intended task while the alignment term keeps the drift small. This is
Net2Net-style growth (Chen et al., ICLR 2016) applied to the embedding models here:

* wider: every weight matrix gets new rows (new outputs, freshly initialised, reading every input)
  and new columns that the *old* outputs ignore (zero), so the old coordinates are unchanged;
* deeper (PinSAGE): the extra layers are identity layers (root weight I, neighbour weight 0,
  BatchNorm set to undo its own normalisation on the current graph). Inserted after a ReLU, an
  identity layer followed by ReLU is exact (its input is non-negative). A 1-layer model has no
  ReLU to hide behind: the identity layer then adds a constant shift s that makes its input
  non-negative, and the old layer takes it out again: W_root·s through its bias, and W_neigh·s
  (which only nodes *with* neighbours receive, as the mean of their neighbours' shift) through a
  constant-1 channel kept in one of the new coordinates, whose neighbour mean is exactly 1 for a
  node with neighbours and 0 for one without. Without a spare coordinate (same width) the
  neighbour part goes to the bias too, which is exact only for nodes with neighbours;
  :attr:`Growth.max_error` reports what is left.

Table models (MF, LightGCN) grow by copying the tables into the first columns: their output is
linear in the tables column by column (LightGCN: the same propagation over the same graph), so
the old coordinates are exact; LightGCN needs the same number of layers.

Only the built-in models can be grown; :func:`grow` returns ``None`` for anything else (and for a
version that shrinks), and the caller falls back to a fresh initialisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.models.graph import Graph
from training.models.lightgcn import LightGCN
from training.models.mf import MatrixFactorization
from training.models.pinsage import PinSAGE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Growth:
    """A grown model: ``new``'s first ``old_dim`` output coordinates reproduce ``old``'s output."""

    old_dim: int
    new_dim: int
    #: Largest |new[:, :old_dim] - old| over all users and items of the graph (eval mode).
    max_error: float


@torch.no_grad()
def grow(old: nn.Module, new: nn.Module, graph: Graph) -> Growth | None:
    """Overwrite ``new``'s weights (a freshly built model of version k's architecture) so that it
    computes ``old`` in its first coordinates; ``None`` (``new`` untouched) when it cannot."""
    if isinstance(old, PinSAGE) and isinstance(new, PinSAGE):
        if new.dim < old.dim or new.num_layers < old.num_layers or old.num_layers < 1:
            logger.info(
                "no warm start: PinSAGE %dx%d cannot grow into %dx%d (dimension or depth shrinks)",
                old.dim,
                old.num_layers,
                new.dim,
                new.num_layers,
            )
            return None
        _grow_pinsage(old, new, graph)
    elif isinstance(old, LightGCN) and isinstance(new, LightGCN) and old.num_layers != new.num_layers:
        # The output is the mean of layers 0..L: another L changes every coordinate's mix.
        logger.info("no warm start: LightGCN %d layers cannot grow into %d", old.num_layers, new.num_layers)
        return None
    elif isinstance(old, MatrixFactorization) and type(old) is type(new):  # LightGCN is a MatrixFactorization
        if (
            new.dim < old.dim
            or new.user_table.shape[0] < old.user_table.shape[0]
            or new.item_table.shape[0] < old.item_table.shape[0]
        ):
            logger.info("no warm start: the embedding tables shrink")
            return None
        new.user_table[: len(old.user_table), : old.dim] = old.user_table
        new.item_table[: len(old.item_table), : old.dim] = old.item_table
    else:
        logger.info("no warm start: cannot grow a %s into a %s", type(old).__name__, type(new).__name__)
        return None
    old.eval()
    new.eval()
    old_user, old_item = old(graph)
    new_user, new_item = new(graph)
    error = max(
        float((new_user[:, : old.dim] - old_user).abs().max()) if len(old_user) else 0.0,
        float((new_item[:, : old.dim] - old_item).abs().max()) if len(old_item) else 0.0,
    )
    return Growth(old_dim=old.dim, new_dim=new.dim, max_error=error)


def _grow_pinsage(old: PinSAGE, new: PinSAGE, graph: Graph) -> None:
    d = old.dim
    new.user_input[:, :d] = old.user_input
    for name, bag in old.item_encoder.bags.items():
        new.item_encoder.bags[name].weight[:, :d] = bag.weight
    extra = new.num_layers - old.num_layers
    # Where the old layers land: identity layers go right after old layer 0 (behind its ReLU), or
    # in front of a 1-layer model's only layer (behind the shift described in the module docstring).
    if old.num_layers >= 2:
        layout: list[int | None] = [0, *([None] * extra), *range(1, old.num_layers)]
    else:
        layout = [*([None] * extra), 0]
    for layer, norm, source in zip(new.layers, new.norms, layout, strict=True):
        if source is not None:
            _copy_layer(layer, norm, old.layers[source], old.norms[source], d)

    # Identity layers need the statistics of their input: walk the grown model forward (eval mode).
    x = torch.cat([new.user_input.expand(graph.num_users, -1), new.item_encoder(graph)])
    shift = None
    constant = d if new.dim > d else None  # the coordinate that carries 1 through the shift layer
    for i, (layer, norm, source) in enumerate(zip(new.layers, new.norms, layout, strict=True)):
        if source is None:
            layer.root.weight.copy_(torch.eye(new.dim))
            layer.neighbours.weight.zero_()
            layer.neighbours.bias.zero_()
            if i == 0 and old.num_layers == 1:
                # Make the input non-negative so the ReLU after this layer keeps it whole.
                shift = (-x.min(dim=0).values).clamp_min(0) + 1.0
                layer.neighbours.bias.copy_(shift)
                if constant is not None:
                    layer.root.weight[constant].zero_()
                    layer.neighbours.bias[constant] = 1.0
            pre = layer(x, graph.mean_adjacency)
            mean, var = pre.mean(dim=0), pre.var(dim=0, unbiased=False)
            norm.weight.copy_(torch.sqrt(var + norm.eps))  # var 0 (the constant channel) is exact too
            norm.bias.copy_(mean)
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
        elif shift is not None:
            # This layer reads x + shift in the old coordinates: take the shift back out.
            old_shift = shift[:d]
            root_part = layer.root.weight[:d, :d] @ old_shift
            neighbour_part = layer.neighbours.weight[:d, :d] @ old_shift
            if constant is not None:
                layer.neighbours.bias[:d] -= root_part
                layer.neighbours.weight[:d, constant] = -neighbour_part  # × mean of the constant: 1 or 0
            else:
                layer.neighbours.bias[:d] -= root_part + neighbour_part
            shift = None
        x = F.batch_norm(
            layer(x, graph.mean_adjacency),
            norm.running_mean,
            norm.running_var,
            norm.weight,
            norm.bias,
            training=False,
            eps=norm.eps,
        )
        if i < new.num_layers - 1:
            x = F.relu(x)


def _copy_layer(layer: nn.Module, norm: nn.BatchNorm1d, old_layer: nn.Module, old_norm: nn.BatchNorm1d, d: int) -> None:
    """Old weights into the top-left block; old outputs ignore the new inputs (zero block)."""
    for new_linear, old_linear in ((layer.neighbours, old_layer.neighbours), (layer.root, old_layer.root)):
        new_linear.weight[:d, :d] = old_linear.weight
        new_linear.weight[:d, d:] = 0.0
        if old_linear.bias is not None:
            new_linear.bias[:d] = old_linear.bias
    norm.weight[:d] = old_norm.weight
    norm.bias[:d] = old_norm.bias
    norm.running_mean[:d] = old_norm.running_mean
    norm.running_var[:d] = old_norm.running_var
    norm.num_batches_tracked.copy_(old_norm.num_batches_tracked)
