"""Training configuration (pydantic) and its named profiles.

The paper trains every version for 500 epochs at batch 2048 on a GPU; on 2 CPU cores that is
~30-70 minutes per version on MovieLens 100K (docs/TRAINING.md). Why the default changed: the
paper's PinSAGE at batch 8192 and a fixed 40-60 epochs is ~280 optimizer steps on a table like
MovieLens 100K, and its inductive, attribute-driven item encoder ranks the next time slice worse
than a one-second ALS (docs/RESULTS.md, "Intended task"). The default is now LightGCN (free
vectors smoothed over the same graph) at batch 2048, trained until validation recall stops
improving (``patience``; ``epochs`` is only a cap), so the budget follows the data:

* ``default`` -- LightGCN at the paper's dims, 2 propagation layers, batch 2048, lr 5e-3, 8 uniform
  negatives per pair (BPR averaged over them), patience 5 evaluations (every 3 epochs), at most 150
  epochs: ``train``, ``reproduce`` and the benchmarks;
* ``paper``   -- the authors' settings (PinSAGE, 500 epochs at batch 2048), for reference and GPUs;
* ``fast``    -- the paper's PinSAGE at batch 8192 and 40 epochs: what every result before the
  LightGCN default was measured with (docs/RESULTS.md keeps those tables);
* ``demo``    -- LightGCN with reduced dims, batch 1024 (the default synthetic data has ~6k training
  interactions), patience as the default: the demo's strategies x 5 versions in a minute or two;
* ``tiny``    -- a few epochs of very small PinSAGE models, for tests.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.data.splits import PAPER_TIME_SLICES
from training.errors import ConfigError
from training.evaluation import PAPER_RECALL_KS, PRIMARY_K
from training.models.factory import ModelKind

ProfileName = Literal["paper", "default", "fast", "demo", "tiny"]


class TrainingConfig(BaseModel):
    """Everything about *how* versions are trained (the strategy says *what* is trained)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelKind = "lightgcn"
    dims: tuple[int, ...] = Field((256, 320, 384, 448, 512), description="embedding dimension D_k per version")
    layers: tuple[int, ...] = Field(
        (2, 2, 2, 2, 2),
        description="GNN layers (pinsage) or propagation steps (lightgcn; the same at every version, or the warm "
        "start cannot be exact) per version",
    )
    time_slices: tuple[float, ...] = Field(
        PAPER_TIME_SLICES, description="version k trains up to t_k, validates on (t_k, t_k+1]"
    )

    epochs: int = Field(500, ge=1, description="epochs of a freshly trained model")
    batch_size: int = Field(2048, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    l2_weight: float = Field(1e-2, ge=0, description="coefficient of the L2 term on batch embeddings in BPR")
    negatives: int = Field(
        1, ge=1, description="negative items per (user, positive) pair in BPR (1: the paper's; the mean over them)"
    )
    eval_every: int = Field(10, ge=1, description="evaluate validation recall every N epochs (and at the last)")
    patience: int | None = Field(
        None,
        ge=1,
        description="stop a model's training after this many evaluations (past select_after_epoch) "
        "without a better validation recall: ``epochs`` becomes a cap and the budget follows the data "
        "(None: always run ``epochs``, as the paper)",
    )
    select_after_epoch: int = Field(
        50, ge=0, description="joint strategies: only checkpoints after this epoch may be selected"
    )
    finetune_epochs: int = Field(250, ge=1, description="finetune-m0: epochs per update after version 0")
    posthoc_epochs: int = Field(200, ge=1, description="post-hoc strategies: epochs fitting B_k")
    posthoc_eval_every: int = Field(10, ge=1)
    posthoc_select_after_epoch: int = Field(50, ge=0)
    recall_ks: tuple[int, ...] = PAPER_RECALL_KS
    selection_k: int = Field(PRIMARY_K, description="model selection uses validation Recall@selection_k")

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        versions = len(self.time_slices) - 1
        if versions < 1:
            raise ValueError("time_slices needs at least two points (one version)")
        if any(not 0 < t <= 1 for t in self.time_slices) or any(a >= b for a, b in pairwise(self.time_slices)):
            raise ValueError(f"time_slices must increase strictly within (0, 1]; got {self.time_slices}")
        if len(self.dims) != versions or len(self.layers) != versions:
            raise ValueError(
                f"{versions} versions (from {len(self.time_slices)} time slices) need {versions} dims and layers; "
                f"got {len(self.dims)} dims and {len(self.layers)} layers"
            )
        if any(d < 1 for d in self.dims) or any(n < 0 for n in self.layers):
            raise ValueError("dims must be >= 1 and layers >= 0")
        if self.select_after_epoch >= self.epochs:
            raise ValueError(
                f"select_after_epoch ({self.select_after_epoch}) must be below epochs ({self.epochs}), "
                "or no checkpoint could ever be selected"
            )
        if self.posthoc_select_after_epoch >= self.posthoc_epochs:
            raise ValueError("posthoc_select_after_epoch must be below posthoc_epochs")
        if self.selection_k not in self.recall_ks:
            raise ValueError(f"selection_k {self.selection_k} must be one of recall_ks {self.recall_ks}")
        return self

    @property
    def num_versions(self) -> int:
        return len(self.time_slices) - 1


#: The paper's PinSAGE architecture (layers per version).
_PINSAGE = dict(model="pinsage", layers=(2, 2, 3, 3, 3))

_PROFILES: dict[str, dict] = {
    "default": dict(
        batch_size=2048,
        learning_rate=5e-3,
        l2_weight=1e-3,
        negatives=8,
        epochs=150,
        eval_every=3,
        patience=5,
        select_after_epoch=9,
        finetune_epochs=30,
        posthoc_epochs=100,
        posthoc_eval_every=5,
        posthoc_select_after_epoch=25,
    ),
    "paper": dict(_PINSAGE),
    "fast": dict(
        _PINSAGE,
        batch_size=8192,
        epochs=40,
        eval_every=5,
        select_after_epoch=15,
        finetune_epochs=20,
        posthoc_epochs=100,
        posthoc_eval_every=5,
        posthoc_select_after_epoch=25,
    ),
    "demo": dict(
        dims=(32, 40, 48, 56, 64),
        batch_size=1024,
        learning_rate=5e-3,
        l2_weight=1e-3,
        epochs=60,
        eval_every=3,
        patience=5,
        select_after_epoch=9,
        finetune_epochs=20,
        posthoc_epochs=60,
        posthoc_eval_every=5,
        posthoc_select_after_epoch=15,
    ),
    "tiny": dict(
        model="pinsage",
        dims=(8, 10, 12, 14, 16),
        layers=(1, 1, 1, 2, 2),
        batch_size=1024,
        epochs=6,
        eval_every=2,
        select_after_epoch=2,
        finetune_epochs=4,
        posthoc_epochs=20,
        posthoc_eval_every=5,
        posthoc_select_after_epoch=5,
    ),
}

PROFILE_NAMES: tuple[str, ...] = tuple(_PROFILES)


def profile(name: ProfileName | str = "default", **overrides) -> TrainingConfig:
    """A named profile, optionally with some fields changed (validated together)."""
    if name not in _PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(_PROFILES)}")
    return TrainingConfig(**{**_PROFILES[name], **overrides})
