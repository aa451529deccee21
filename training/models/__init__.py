"""Embedding models (torch): the paper's PinSAGE-style GNN and a matrix-factorisation baseline.

Both map a :class:`Graph` to ``(user_embeddings, item_embeddings)`` for every node of the graph.
"""

from training.models.factory import ModelKind, ModelSpec, build_model
from training.models.graph import Graph, build_graph
from training.models.mf import MatrixFactorization
from training.models.pinsage import PinSAGE

__all__ = ["Graph", "MatrixFactorization", "ModelKind", "ModelSpec", "PinSAGE", "build_graph", "build_model"]
