"""One trained version, described once: what the chain returns, the work directory stores, the
reproduction reports and the demo shows are this record plus what each of them adds.

Why one type: a version's facts (its split, architecture, backward transform kind, validation
recall, alignment errors, how it was selected and how long it took) used to be copied field by
field between four records; a field added in one place went missing in the others.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from training.evaluation import PRIMARY_K
from training.models.factory import ModelSpec

#: How B_k was obtained (training.alignment explains the three kinds).
TransformKind = Literal["learned", "truncation", "identity"]


class TrainedVersion(BaseModel):
    """The facts of one trained version of a chain (no arrays, no files). Not the catalog's
    :class:`feast_bc.manifest.VersionRecord`, which records a *published* version."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    version: int = Field(ge=0)
    time_train: float = Field(description="trained on interactions up to this fraction of the timeline")
    time_next: float = Field(description="validated on (time_train, time_next]")
    num_users: int
    num_items: int
    model: ModelSpec
    transform_kind: TransformKind | None = Field(None, description="how B_k was obtained; None for version 0")
    val_recall: dict[int, float]
    #: j -> {"user", "item", "all"}: mean L2 distance between B-chain(z_k) in space j and M_j's
    #: embeddings of this version's graph.
    alignment_error: dict[int, dict[str, float]] = Field(default_factory=dict)
    selected_epoch: int | None = Field(description="None when nothing was trained (Fix-M0 after version 0)")
    epochs_run: int
    train_seconds: float = Field(description="the strategy's training (cached parts count with their original time)")
    total_seconds: float = Field(description="everything of this version in its process, evaluation included")
    from_cache: bool = False

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def recall(self) -> float:
        """Validation Recall@PRIMARY_K, the paper's intended-task figure."""
        return self.val_recall[PRIMARY_K]
