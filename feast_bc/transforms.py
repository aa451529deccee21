"""Backward transforms B_v: version v -> version v-1, and their composition.

Only the latest embeddings z_k are stored; a version-j value is B_{j+1}(...B_k(z_k)). Serving
must not pay k matrix products per row, so a chain is *composed* once: consecutive linear maps
are multiplied in float64 (the product of float32 weights is exact-ish there) and rounded to one
float32 matrix, after which every row costs a single ``(n, d_k) @ (d_k, d_j)`` regardless of k.

The transform types are scikit-learn-like objects with explicit parameters and a ``transform``
method. A new kind (say, a small MLP) subclasses :class:`BackwardTransform`, registers itself with
:func:`register_kind`, and :func:`compose` keeps fusing the linear runs around it.

Serialization is safetensors (never pickle): see :mod:`feast_bc.artifacts` for the verified
reader that refuses tampered, truncated or absurd files before any array is allocated.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from feast_bc.errors import DimensionMismatchError, InvalidInputError, NonFiniteError

#: Largest embedding dimension accepted anywhere (guards against absurd artifacts).
MAX_DIM = 65_536

_KINDS: dict[str, type[BackwardTransform]] = {}


def register_kind(cls: type[BackwardTransform]) -> type[BackwardTransform]:
    """Class decorator: make a transform kind loadable from artifacts by its ``kind`` string."""
    _KINDS[cls.kind] = cls
    return cls


def transform_class(kind: str) -> type[BackwardTransform]:
    try:
        return _KINDS[kind]
    except KeyError:
        raise InvalidInputError(f"unknown transform kind {kind!r}; known kinds: {', '.join(sorted(_KINDS))}") from None


def as_matrix(x: np.ndarray, *, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """Validate a float matrix of shape (n, dim) and return it as C-contiguous float32."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise DimensionMismatchError(f"{what} must be a 2-D array (rows, dim); got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"{what} must be numeric; got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(f"{what} have dimension {arr.shape[1]}, expected {dim}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))
        raise NonFiniteError(
            f"{what} contain {len(bad)} NaN/inf entries (first at row {bad[0][0]}, column {bad[0][1]})"
        )
    return out


class BackwardTransform(ABC):
    """A map from the space of one version (``in_dim``) to an older one (``out_dim``)."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def in_dim(self) -> int: ...

    @property
    @abstractmethod
    def out_dim(self) -> int: ...

    @abstractmethod
    def transform(self, x: np.ndarray) -> np.ndarray:
        """Map rows of ``x`` (n, in_dim) to (n, out_dim) float32."""

    @abstractmethod
    def to_tensors(self) -> dict[str, np.ndarray]:
        """Named arrays that fully describe the transform (written as safetensors)."""

    @classmethod
    @abstractmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> BackwardTransform: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_dim} -> {self.out_dim})"


@register_kind
class LinearTransform(BackwardTransform):
    """z_old ~= W @ z_new, with W of shape (out_dim, in_dim) -- torch ``nn.Linear(bias=False)`` layout."""

    kind = "linear"

    def __init__(self, weight: np.ndarray):
        w = np.asarray(weight)
        if w.ndim != 2 or min(w.shape) < 1:
            raise DimensionMismatchError(f"linear transform weight must be 2-D (out_dim, in_dim); got shape {w.shape}")
        if max(w.shape) > MAX_DIM:
            raise DimensionMismatchError(f"linear transform shape {w.shape} exceeds the maximum dimension {MAX_DIM}")
        self.weight = as_matrix(w, what="transform weight")

    @property
    def in_dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.weight.shape[0])

    def transform(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``x @ W.T``; with ``out`` (a C-contiguous (n, out_dim) float32 array) written into it --
        the same BLAS call, bit for bit, without a fresh allocation (materialization reuses its
        output buffers: see :mod:`feast_bc.materialize.stream`)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise DimensionMismatchError(f"{self!r} cannot take rows of shape {x.shape}")
        return np.matmul(x, self.weight.T, out=out)

    def to_tensors(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> LinearTransform:
        if set(tensors) != {"weight"}:
            raise InvalidInputError(f"a linear transform holds exactly one tensor 'weight'; found {sorted(tensors)}")
        return cls(tensors["weight"])

    @classmethod
    def fit(cls, z_new: np.ndarray, z_old: np.ndarray, *, ridge: float = 0.0) -> LinearTransform:
        """Least-squares W minimizing ||z_new W^T - z_old||^2 + ridge ||W||^2 (post-hoc alignment).

        Useful to give an existing embedding table a backward transform without retraining; the
        jointly trained BC-Aligner transforms come from :mod:`training` instead.
        """
        x = as_matrix(z_new, what="z_new").astype(np.float64)
        y = as_matrix(z_old, what="z_old").astype(np.float64)
        if x.shape[0] != y.shape[0]:
            raise DimensionMismatchError(f"z_new has {x.shape[0]} rows but z_old has {y.shape[0]}")
        gram = x.T @ x + ridge * np.eye(x.shape[1])
        w_t = np.linalg.lstsq(gram, x.T @ y, rcond=None)[0]
        return cls(w_t.T)


class ChainTransform(BackwardTransform):
    """Transforms applied one after another (used only when a chain holds non-linear kinds)."""

    kind = "chain"

    def __init__(self, steps: Sequence[BackwardTransform]):
        if not steps:
            raise InvalidInputError("a chain needs at least one transform")
        for a, b in itertools.pairwise(steps):
            if a.out_dim != b.in_dim:
                raise DimensionMismatchError(f"cannot chain {a!r} into {b!r}")
        self.steps = list(steps)

    @property
    def in_dim(self) -> int:
        return self.steps[0].in_dim

    @property
    def out_dim(self) -> int:
        return self.steps[-1].out_dim

    def transform(self, x: np.ndarray) -> np.ndarray:
        for step in self.steps:
            x = step.transform(x)
        return x

    def to_tensors(self) -> dict[str, np.ndarray]:
        raise InvalidInputError("a composed chain is not stored; store its member transforms instead")

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> ChainTransform:
        raise InvalidInputError("a composed chain is not stored; store its member transforms instead")


class IdentityTransform(BackwardTransform):
    """The version asked for is the stored one."""

    kind = "identity"

    def __init__(self, dim: int):
        self._dim = int(dim)

    @property
    def in_dim(self) -> int:
        return self._dim

    @property
    def out_dim(self) -> int:
        return self._dim

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def to_tensors(self) -> dict[str, np.ndarray]:
        raise InvalidInputError("the identity is implicit and never stored")

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> IdentityTransform:
        raise InvalidInputError("the identity is implicit and never stored")


def compose(steps: Sequence[BackwardTransform], *, dim: int | None = None) -> BackwardTransform:
    """One transform equal to applying ``steps`` in order (B_k first, B_{j+1} last).

    Runs of linear steps collapse into one float32 matrix computed in float64, so serving cost
    does not grow with the chain length. An empty chain is the identity on ``dim``.
    """
    if not steps:
        if dim is None:
            raise InvalidInputError("composing an empty chain needs the dimension of the identity")
        return IdentityTransform(dim)
    fused: list[BackwardTransform] = []
    run: np.ndarray | None = None  # float64 product of the current linear run
    for prev, step in zip([None, *steps], steps, strict=False):
        if prev is not None and prev.out_dim != step.in_dim:
            raise DimensionMismatchError(f"cannot chain {prev!r} into {step!r}: dimensions do not line up")
        if isinstance(step, LinearTransform):
            w = step.weight.astype(np.float64)
            run = w if run is None else w @ run
        else:
            if run is not None:
                fused.append(LinearTransform(run))
                run = None
            fused.append(step)
    if run is not None:
        fused.append(LinearTransform(run))
    return fused[0] if len(fused) == 1 else ChainTransform(fused)
