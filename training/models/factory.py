"""What is needed to rebuild a version's model from its checkpoint, and building it."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from training.data.dataset import InteractionDataset

#: ``lightgcn`` is the default (training.config); ``pinsage`` the paper's model; ``mf`` plain factorisation.
ModelKind = Literal["lightgcn", "pinsage", "mf"]
#: The names `--model` accepts (one list: the CLI's choices come from the type).
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)


class ModelSpec(BaseModel):
    """Architecture of one version's model; with the state_dict it fully determines the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ModelKind = "pinsage"
    dim: int = Field(ge=1)
    num_layers: int = Field(ge=0, description="GNN layers (pinsage) or propagation steps (lightgcn)")
    vocabulary_sizes: dict[str, int] = Field(default_factory=dict, description="item attribute groups (pinsage)")
    max_users: int = Field(0, ge=0, description="table size (mf, lightgcn)")
    max_items: int = Field(0, ge=0, description="table size (mf, lightgcn)")

    @classmethod
    def for_dataset(cls, kind: ModelKind, dim: int, num_layers: int, dataset: InteractionDataset) -> ModelSpec:
        if kind == "pinsage":
            sizes = {name: len(g.vocabulary) for name, g in dataset.item_attributes.items()}
            return cls(kind=kind, dim=dim, num_layers=num_layers, vocabulary_sizes=sizes)
        layers = num_layers if kind == "lightgcn" else 0
        return cls(kind=kind, dim=dim, num_layers=layers, max_users=dataset.num_users, max_items=dataset.num_items)


def build_model(spec: ModelSpec) -> nn.Module:
    if spec.kind == "pinsage":
        from training.models.pinsage import PinSAGE

        return PinSAGE(spec.dim, spec.num_layers, spec.vocabulary_sizes)
    if spec.kind == "lightgcn":
        from training.models.lightgcn import LightGCN

        return LightGCN(spec.dim, spec.num_layers, spec.max_users, spec.max_items)
    from training.models.mf import MatrixFactorization

    return MatrixFactorization(spec.dim, spec.max_users, spec.max_items)
