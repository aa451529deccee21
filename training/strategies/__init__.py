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
bc-aligner-plus      ours: BC-Aligner's loss; PinSAGE: M_k grown from  learned, refit by least squares
                     M_{k-1}, B_k from [I 0], aligned selection;
                     LightGCN/MF: fresh M_k, best-recall checkpoint
nobc-warm            No-BC with ours' warm start: M_k grown from       least squares on the selected M_k
                     M_{k-1}, BPR only
==================== ================================================= ===============================

The first eight are the paper's; ``bc-aligner-plus`` is ours (:class:`BCAlignerPlus`, measured in
docs/RESULTS.md); ``nobc-warm`` (:class:`NoBCWarm`) is the reference that separates what ours' warm
start gives the intended task from what its alignment costs. Version 0 is the same for all: a fresh M_0 trained on BPR (identical across strategies for a
given seed, which the model cache exploits). Strategies are explicit-parameter objects in the
scikit-learn style: hyperparameters in ``__init__`` (only the joint ones take ``lam``), one
``fit_version`` call per version.

Modules: :mod:`~training.strategies.base` (spec, context, the Strategy interface),
:mod:`~training.strategies.paper` (the eight), :mod:`~training.strategies.plus` (ours); this module
holds the registry: :func:`make_strategy`, :func:`parse_strategy_spec`, :func:`strategy_from_spec`.
"""

from __future__ import annotations

from training.errors import ConfigError
from training.strategies.base import (
    ALIASES,
    DEFAULT_LAMBDA,
    DEFAULT_STRATEGY,
    PLUS_OPTIONS,
    STRATEGY_NAMES,
    History,
    Strategy,
    StrategyFit,
    StrategyName,
    StrategySpec,
    VersionContext,
)
from training.strategies.nobc_warm import NoBCWarm
from training.strategies.paper import (
    BCAligner,
    FinetuneM0,
    FixM0,
    JointLinSLoss,
    JointNoTrans,
    NoBC,
    PosthocLinMLoss,
    PosthocLinSLoss,
    _Joint,
)
from training.strategies.plus import BCAlignerPlus

__all__ = [
    "ALIASES",
    "BCAligner",
    "BCAlignerPlus",
    "DEFAULT_LAMBDA",
    "DEFAULT_STRATEGY",
    "FinetuneM0",
    "FixM0",
    "History",
    "JointLinSLoss",
    "JointNoTrans",
    "NoBC",
    "NoBCWarm",
    "PLUS_OPTIONS",
    "PosthocLinMLoss",
    "PosthocLinSLoss",
    "STRATEGY_NAMES",
    "Strategy",
    "StrategyFit",
    "StrategyName",
    "StrategySpec",
    "VersionContext",
    "make_strategy",
    "parse_strategy_spec",
    "strategy_from_spec",
]

_CLASSES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FixM0,
        FinetuneM0,
        NoBC,
        PosthocLinSLoss,
        PosthocLinMLoss,
        JointNoTrans,
        JointLinSLoss,
        BCAligner,
        BCAlignerPlus,
        NoBCWarm,
    )
}


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
