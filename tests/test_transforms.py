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


# ----------------------------------------------------------------------------- residual MLP
def _residual_mlp(rng, in_dim, out_dim, hidden):
    from feast_bc.transforms import ResidualMLPTransform

    return ResidualMLPTransform(
        rng.normal(size=(out_dim, in_dim)) / np.sqrt(in_dim),
        rng.normal(size=(hidden, in_dim)) / np.sqrt(in_dim),
        rng.normal(size=hidden),
        rng.normal(size=(out_dim, hidden)) / np.sqrt(hidden),
        rng.normal(size=out_dim),
    )


def _residual_mlp_float64(t, x):
    x = x.astype(np.float64)
    hidden = np.maximum(x @ t.hidden_weight.T.astype(np.float64) + t.hidden_bias.astype(np.float64), 0.0)
    return x @ t.weight.T.astype(np.float64) + hidden @ t.output_weight.T.astype(np.float64) + t.output_bias


def test_residual_mlp_is_a_linear_map_plus_a_relu_correction():
    rng = np.random.default_rng(5)
    t = _residual_mlp(rng, 9, 4, 6)
    assert (t.in_dim, t.out_dim, t.hidden_dim) == (9, 4, 6)
    x = rng.normal(size=(11, 9)).astype(np.float32)
    got = t.transform(x)
    assert got.dtype == np.float32 and got.shape == (11, 4)
    np.testing.assert_allclose(got, _residual_mlp_float64(t, x), atol=1e-5)
    # with a zero output layer it is exactly its linear map
    from feast_bc.transforms import ResidualMLPTransform

    zero = ResidualMLPTransform(t.weight, t.hidden_weight, t.hidden_bias, np.zeros((4, 6)), np.zeros(4))
    np.testing.assert_array_equal(zero.transform(x), LinearTransform(t.weight).transform(x))


def test_a_chain_with_one_residual_mlp_composes_to_one_residual_mlp():
    """Read cost flat in k: the linear runs before and after it fold into its layers."""
    from feast_bc.transforms import ResidualMLPTransform

    rng = np.random.default_rng(6)
    b4, b3 = LinearTransform(rng.normal(size=(10, 12)) / 3), LinearTransform(rng.normal(size=(8, 10)) / 3)
    b2 = _residual_mlp(rng, 8, 7, 5)
    b1 = LinearTransform(rng.normal(size=(6, 7)) / 3)
    composed = compose([b4, b3, b2, b1])
    assert isinstance(composed, ResidualMLPTransform)
    assert (composed.in_dim, composed.out_dim, composed.hidden_dim) == (12, 6, 5)
    x = rng.normal(size=(20, 12)).astype(np.float32)
    sequential = x.astype(np.float64) @ b4.weight.T @ b3.weight.T
    sequential = _residual_mlp_float64(b2, sequential) @ b1.weight.T.astype(np.float64)
    np.testing.assert_allclose(composed.transform(x), sequential, atol=1e-5)
    # two residual MLPs stay two steps (each with its neighbours folded in)
    two = compose([b4, b3, b2, b1, _residual_mlp(rng, 6, 3, 4)])
    assert isinstance(two, ChainTransform) and [type(s).__name__ for s in two.steps] == ["ResidualMLPTransform"] * 2


def test_residual_mlp_round_trips_through_its_artifact_and_refuses_bad_tensors():
    from feast_bc.artifacts import decode_transform, encode_transform
    from feast_bc.transforms import ResidualMLPTransform

    rng = np.random.default_rng(7)
    t = _residual_mlp(rng, 5, 3, 4)
    back = decode_transform(encode_transform(t), origin="test")
    assert isinstance(back, ResidualMLPTransform)
    for name, arr in t.to_tensors().items():
        np.testing.assert_array_equal(getattr(back, name), arr)
    with pytest.raises(InvalidInputError, match="exactly the tensors"):
        ResidualMLPTransform.from_tensors({"weight": t.weight})
    with pytest.raises(DimensionMismatchError, match="hidden_weight must have shape"):
        ResidualMLPTransform(t.weight, np.ones((4, 6)), t.hidden_bias, t.output_weight, t.output_bias)
    with pytest.raises(DimensionMismatchError, match="output_bias must have shape"):
        ResidualMLPTransform(t.weight, t.hidden_weight, t.hidden_bias, t.output_weight, np.ones(7))
    with pytest.raises(NonFiniteError):
        ResidualMLPTransform(t.weight, t.hidden_weight, [np.nan] * 4, t.output_weight, t.output_bias)
