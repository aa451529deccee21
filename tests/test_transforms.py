import numpy as np
import pytest

from feast_bc.errors import DimensionMismatchError, InvalidInputError, NonFiniteError
from feast_bc.transforms import (
    BackwardTransform,
    ChainTransform,
    IdentityTransform,
    LinearTransform,
    compose,
    register_kind,
)


def _chain(rng, dims):
    """B_v for v = len(dims)-1 .. 1, in application order, plus float64 copies."""
    bs = [rng.normal(size=(dims[v - 1], dims[v])).astype(np.float32) for v in range(len(dims) - 1, 0, -1)]
    return bs


def test_compose_linear_chain_is_one_matrix_equal_to_sequential_application():
    rng = np.random.default_rng(1)
    dims = [5, 7, 9, 11]
    bs = _chain(rng, dims)
    composed = compose([LinearTransform(b) for b in bs])
    assert isinstance(composed, LinearTransform)
    assert (composed.in_dim, composed.out_dim) == (11, 5)
    assert composed.weight.dtype == np.float32
    x = rng.normal(size=(13, 11)).astype(np.float32)
    ref = x.astype(np.float64)
    for b in bs:
        ref = ref @ b.astype(np.float64).T
    np.testing.assert_allclose(composed.transform(x), ref, atol=1e-4, rtol=1e-5)
    # composed in float64 then rounded once: the matrix equals the float64 product rounded to float32
    prod = bs[-1].astype(np.float64)
    for b in reversed(bs[:-1]):
        prod = prod @ b.astype(np.float64)
    np.testing.assert_array_equal(composed.weight, prod.astype(np.float32))


def test_empty_chain_is_identity_and_needs_a_dimension():
    ident = compose([], dim=4)
    assert isinstance(ident, IdentityTransform)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(ident.transform(x), x)
    with pytest.raises(InvalidInputError):
        compose([])


def test_chain_with_mismatched_dims_is_refused():
    with pytest.raises(DimensionMismatchError, match="do not line up"):
        compose([LinearTransform(np.ones((3, 4))), LinearTransform(np.ones((2, 5)))])


def test_linear_transform_rejects_bad_weights():
    with pytest.raises(NonFiniteError):
        LinearTransform(np.array([[1.0, np.nan]]))
    with pytest.raises(DimensionMismatchError):
        LinearTransform(np.ones(3))
    t = LinearTransform(np.ones((2, 3)))
    with pytest.raises(DimensionMismatchError):
        t.transform(np.ones((4, 2), dtype=np.float32))


def test_fit_recovers_a_planted_linear_map():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(4, 6))
    z_new = rng.normal(size=(200, 6))
    fitted = LinearTransform.fit(z_new, z_new @ w.T)
    np.testing.assert_allclose(fitted.weight, w, atol=1e-4)


def test_nonlinear_kind_is_composed_around_linear_runs():
    @register_kind
    class Tanh(BackwardTransform):
        kind = "test-tanh"

        def __init__(self, dim):
            self.dim = dim

        in_dim = property(lambda self: self.dim)
        out_dim = property(lambda self: self.dim)

        def transform(self, x):
            return np.tanh(x).astype(np.float32)

        def to_tensors(self):
            return {}

        @classmethod
        def from_tensors(cls, tensors):
            raise NotImplementedError

    rng = np.random.default_rng(3)
    a, b, c = (LinearTransform(rng.normal(size=s)) for s in [(6, 8), (5, 6), (3, 5)])
    composed = compose([a, b, Tanh(5), c])
    assert isinstance(composed, ChainTransform)
    assert [type(s).__name__ for s in composed.steps] == ["LinearTransform", "Tanh", "LinearTransform"]
    x = rng.normal(size=(4, 8)).astype(np.float32)
    ref = np.tanh(x.astype(np.float64) @ a.weight.T.astype(np.float64) @ b.weight.T.astype(np.float64)) @ c.weight.T
    np.testing.assert_allclose(composed.transform(x), ref, atol=1e-4)
