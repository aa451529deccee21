"""Backward transforms B_v: version v -> version v-1, and their composition.

Only the latest embeddings z_k are stored; a version-j value is B_{j+1}(...B_k(z_k)). Serving
must not pay k matrix products per row, so a chain is *composed* once: consecutive linear maps
are multiplied in float64 (the product of float32 weights is exact-ish there) and rounded to one
float32 matrix, after which every row costs a single ``(n, d_k) @ (d_k, d_j)`` regardless of k.

The transform types are scikit-learn-like objects with explicit parameters and a ``transform``
method. A new kind subclasses :class:`BackwardTransform`, registers itself with
:func:`register_kind`, and :func:`compose` keeps fusing the linear runs around it;
:class:`ResidualMLPTransform` (linear map plus a one-hidden-layer correction) absorbs the linear
runs next to it, so a chain holding one of them still costs one map per row.

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


class _WeightShaped:
    """``in_dim`` / ``out_dim`` of a transform whose ``weight`` is its (out_dim, in_dim) linear map."""

    weight: np.ndarray

    @property
    def in_dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.weight.shape[0])


@register_kind
class LinearTransform(_WeightShaped, BackwardTransform):
    """z_old ~= W @ z_new, with W of shape (out_dim, in_dim) -- torch ``nn.Linear(bias=False)`` layout."""

    kind = "linear"

    def __init__(self, weight: np.ndarray):
        w = np.asarray(weight)
        if w.ndim != 2 or min(w.shape) < 1:
            raise DimensionMismatchError(f"linear transform weight must be 2-D (out_dim, in_dim); got shape {w.shape}")
        if max(w.shape) > MAX_DIM:
            raise DimensionMismatchError(f"linear transform shape {w.shape} exceeds the maximum dimension {MAX_DIM}")
        self.weight = as_matrix(w, what="transform weight")

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


@register_kind
class ResidualMLPTransform(_WeightShaped, BackwardTransform):
    """z_old ~= W z + V relu(U z + c) + b: a linear map plus a one-hidden-layer correction.

    Why: a linear B_k cannot map a model trained from scratch onto its predecessor (two LightGCN
    optima differ by more than a rotation), and the consumers of old pins read what it misses
    (docs/RESULTS.md, "A non-linear adapter"). The residual form is Drift-Adapter's (EMNLP 2025):
    with V = 0 it *is* the linear map, so a fit starts at least squares and only adds what the
    hidden layer earns. Tensors (torch ``nn.Linear`` layout; biases as 1-row matrices because
    artifacts hold 2-D tensors only): ``weight`` (out, in), ``hidden_weight`` (h, in),
    ``hidden_bias`` (1, h), ``output_weight`` (out, h), ``output_bias`` (1, out).

    Linear maps on either side fold into it (:meth:`after_linear`, :meth:`then_linear`), so a
    chain with one residual MLP among linear steps composes to one residual MLP: the cost of a
    row stays ``in*out + h*(in+out)`` whatever the chain's length.
    """

    kind = "residual_mlp"
    _NAMES = ("weight", "hidden_weight", "hidden_bias", "output_weight", "output_bias")

    def __init__(
        self,
        weight: np.ndarray,
        hidden_weight: np.ndarray,
        hidden_bias: np.ndarray,
        output_weight: np.ndarray,
        output_bias: np.ndarray,
    ):
        w = np.asarray(weight)
        if w.ndim != 2 or min(w.shape) < 1 or max(w.shape) > MAX_DIM:
            raise DimensionMismatchError(f"residual MLP weight must be 2-D (out_dim, in_dim); got shape {w.shape}")
        out_dim, in_dim = w.shape
        u = np.asarray(hidden_weight)
        if u.ndim != 2 or u.shape[1] != in_dim or not 1 <= u.shape[0] <= MAX_DIM:
            raise DimensionMismatchError(
                f"residual MLP hidden_weight must have shape (hidden, {in_dim}); got {u.shape}"
            )
        hidden = u.shape[0]
        v = np.asarray(output_weight)
        if v.shape != (out_dim, hidden):
            raise DimensionMismatchError(
                f"residual MLP output_weight must have shape {(out_dim, hidden)}; got {v.shape}"
            )
        for name, bias, size in (("hidden_bias", hidden_bias, hidden), ("output_bias", output_bias, out_dim)):
            shape = np.shape(bias)
            if shape not in ((size,), (1, size)):  # a vector, or the 1-row matrix artifacts hold
                raise DimensionMismatchError(f"residual MLP {name} must have shape (1, {size}); got {shape}")
        self.weight = as_matrix(w, what="residual MLP weight")
        self.hidden_weight = as_matrix(u, what="residual MLP hidden_weight")
        self.hidden_bias = as_matrix(np.reshape(hidden_bias, (1, hidden)), what="residual MLP hidden_bias")
        self.output_weight = as_matrix(v, what="residual MLP output_weight")
        self.output_bias = as_matrix(np.reshape(output_bias, (1, out_dim)), what="residual MLP output_bias")

    @property
    def hidden_dim(self) -> int:
        return int(self.hidden_weight.shape[0])

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise DimensionMismatchError(f"{self!r} cannot take rows of shape {x.shape}")
        hidden = x @ self.hidden_weight.T
        hidden += self.hidden_bias
        np.maximum(hidden, 0.0, out=hidden)
        out = x @ self.weight.T
        out += hidden @ self.output_weight.T
        out += self.output_bias
        return out

    def to_tensors(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self._NAMES}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> ResidualMLPTransform:
        if set(tensors) != set(cls._NAMES):
            raise InvalidInputError(
                f"a residual MLP transform holds exactly the tensors {', '.join(cls._NAMES)}; found {sorted(tensors)}"
            )
        return cls(**{name: tensors[name] for name in cls._NAMES})

    def after_linear(self, first: np.ndarray) -> ResidualMLPTransform:
        """This map applied after ``x -> first @ x`` (``first``: (in_dim, d)), as one residual MLP."""
        f = np.asarray(first, dtype=np.float64)
        return ResidualMLPTransform(
            self.weight.astype(np.float64) @ f,
            self.hidden_weight.astype(np.float64) @ f,
            self.hidden_bias,
            self.output_weight,
            self.output_bias,
        )

    def then_linear(self, last: np.ndarray) -> ResidualMLPTransform:
        """``x -> last @ self(x)`` (``last``: (d, out_dim)), as one residual MLP."""
        g = np.asarray(last, dtype=np.float64)
        return ResidualMLPTransform(
            g @ self.weight.astype(np.float64),
            self.hidden_weight,
            self.hidden_bias,
            g @ self.output_weight.astype(np.float64),
            self.output_bias.astype(np.float64) @ g.T,
        )


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
    fused = _fold_into_residual_mlps(fused)
    return fused[0] if len(fused) == 1 else ChainTransform(fused)


def _fold_into_residual_mlps(steps: list[BackwardTransform]) -> list[BackwardTransform]:
    """Fold each linear run into the residual MLP next to it (the one after it first), so that a
    chain with one residual MLP is one residual MLP: read cost flat in the chain's length."""
    out: list[BackwardTransform] = []
    for i, step in enumerate(steps):
        if isinstance(step, LinearTransform) and i + 1 < len(steps) and isinstance(steps[i + 1], ResidualMLPTransform):
            steps[i + 1] = steps[i + 1].after_linear(step.weight)
        elif isinstance(step, LinearTransform) and out and isinstance(out[-1], ResidualMLPTransform):
            out[-1] = out[-1].then_linear(step.weight)
        else:
            out.append(step)
    return out
