"""A non-linear backward adapter: a residual MLP fitted from version k's embeddings to an older version's.

Why: when M_k is (close to) a model trained from scratch -- BC-Aligner+ above its intended floor,
or any post-hoc method -- the best *linear* map onto M_{k-1} leaves a residual the consumers of
old pins read (docs/RESULTS.md, "A non-linear adapter"). Drift-Adapter (EMNLP 2025) closes most of
that gap between two embedding models with a small residual MLP; this module fits that form,
:class:`feast_bc.transforms.ResidualMLPTransform`, which feast_bc serves in numpy from a safetensors
artifact.

The linear part is the least-squares map, fixed; the correction starts at zero (output layer
zero), so the fit starts exactly at least squares and can only improve on it in-sample. How many Adam steps it takes is chosen on entities it does not see (``holdout``): an
adapter that memorises the table (it has enough parameters to on a small catalogue) would look
perfect in-sample and map a *new* entity badly; then the adapter is refit on every entity for that
many steps. Users and items weigh the same, as in every alignment objective here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from feast_bc.transforms import ResidualMLPTransform
from training.backward_fit import least_squares_transform, mapped_relative_residual, relative_residual

Pair = tuple[np.ndarray, np.ndarray]  # (users, items), rows = the same entities in both versions


class AdapterSettings(BaseModel):
    """How an adapter is fitted (defaults: what the diagnosis in docs/RESULTS.md ran)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: int = Field(256, ge=1, description="width of the correction's hidden layer")
    max_steps: int = Field(3000, ge=1, description="cap on full-batch Adam steps")
    learning_rate: float = Field(5e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0, description="AdamW decay of the correction (not the linear map)")
    holdout: float = Field(0.1, ge=0, lt=1, description="share of users and of items held out to choose the steps")
    eval_every: int = Field(100, ge=1, description="steps between held-out evaluations")
    patience: int = Field(
        5,
        ge=1,
        description="evaluations without a better held-out residual before stopping (the zero-started "
        "output layer can make the first few hundred steps worse before they get better)",
    )
    seed: int = 0


@dataclass
class AdapterFit:
    """A fitted adapter and what it does on entities it saw and did not see."""

    transform: ResidualMLPTransform
    steps: int  # Adam steps of the final (all-entity) fit; 0 = the linear map was not beaten
    holdout_residual: float  # relative residual on held-out entities, adapter fitted without them
    holdout_residual_linear: float  # the same for the least-squares linear map fitted without them
    residual: float  # relative residual of the final adapter on every entity (in-sample)
    residual_linear: float  # the least-squares linear map on every entity (in-sample)
    parameters: int
    seconds: float


def _split(n: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    cut = int(round(n * share))
    return np.sort(order[cut:]), np.sort(order[:cut])


class _Adapter(torch.nn.Module):
    def __init__(self, linear: np.ndarray, hidden: int, scale: float, generator: torch.Generator):
        super().__init__()
        out_dim, in_dim = linear.shape
        # The least-squares map stays fixed: Adam's per-coordinate steps would move an optimal
        # linear map by ~lr per entry whatever its gradient; the correction learns what it misses.
        self.register_buffer("linear", torch.tensor(linear, dtype=torch.float32))
        init = torch.randn(hidden, in_dim, generator=generator) / (np.sqrt(in_dim) * max(scale, 1e-12))
        self.hidden_weight = torch.nn.Parameter(init)
        self.hidden_bias = torch.nn.Parameter(torch.zeros(hidden))
        self.output_weight = torch.nn.Parameter(torch.zeros(out_dim, hidden))
        self.output_bias = torch.nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(x @ self.hidden_weight.T + self.hidden_bias)
        return x @ self.linear.T + hidden @ self.output_weight.T + self.output_bias

    def export(self) -> ResidualMLPTransform:
        return ResidualMLPTransform(
            *(p.detach().cpu().numpy() for p in (self.linear, self.hidden_weight, self.hidden_bias)),
            self.output_weight.detach().cpu().numpy(),
            self.output_bias.detach().cpu().numpy(),
        )


def _train(new: Pair, old: Pair, settings: AdapterSettings, steps: int, eval_fn=None) -> tuple[_Adapter, int]:
    """Adam from the least-squares start for at most ``steps``; with ``eval_fn`` (adapter -> residual,
    lower is better) the best evaluated state is kept and training stops after ``patience`` worse ones."""
    generator = torch.Generator().manual_seed(settings.seed)
    linear = least_squares_transform(*new, *old)
    scale = float(np.sqrt(np.mean([np.mean(z.astype(np.float64) ** 2) for z in new if len(z)])))
    model = _Adapter(linear, settings.hidden, scale, generator)
    xs = [torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32)) for z in new]
    ys = [torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32)) for t in old]
    optimizer = torch.optim.AdamW(
        [
            {"params": [model.output_bias], "weight_decay": 0.0},
            {"params": [model.hidden_weight, model.hidden_bias, model.output_weight]},
        ],
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )
    best, best_step, best_state, worse = np.inf, 0, None, 0
    if eval_fn is not None:
        best, best_state = eval_fn(model.export()), {k: v.clone() for k, v in model.state_dict().items()}
    # Each entity kind's squared residual relative to its targets' energy: the measure the steps
    # are chosen on (users' vectors are shorter than items', and weigh the same).
    energy = [float((y.double() ** 2).sum(dim=1).mean()) if len(y) else 1.0 for y in ys]
    for step in range(1, steps + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = sum(
            ((model(x) - y) ** 2).sum(dim=1).mean() / max(e, 1e-30)
            for x, y, e in zip(xs, ys, energy, strict=True)
            if len(x)
        )
        loss.backward()
        optimizer.step()
        if eval_fn is not None and step % settings.eval_every == 0:
            value = eval_fn(model.export())
            if value < best:
                best, best_step, worse = value, step, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                worse += 1
                if worse >= settings.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, best_step if eval_fn is not None else steps


def fit_residual_adapter(new: Pair, old: Pair, settings: AdapterSettings | None = None) -> AdapterFit:
    """The residual MLP adapter from ``new`` (users, items) to ``old`` (same rows), steps chosen on held-out entities."""
    settings = settings or AdapterSettings()
    if len(new) != 2 or len(old) != 2 or any(len(a) != len(b) for a, b in zip(new, old, strict=True)):
        raise ValueError("new and old must be (users, items) pairs holding the same entities in the same rows")
    started = time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    splits = [_split(len(z), settings.holdout, rng) for z in new]
    fit_new = tuple(z[s[0]] for z, s in zip(new, splits, strict=True))
    fit_old = tuple(t[s[0]] for t, s in zip(old, splits, strict=True))
    held_new = tuple(z[s[1]] for z, s in zip(new, splits, strict=True))
    held_old = tuple(t[s[1]] for t, s in zip(old, splits, strict=True))

    def held_out(adapter: ResidualMLPTransform) -> float:
        return _residual(adapter, held_new, held_old)

    has_holdout = all(len(z) for z in held_new)
    if has_holdout:
        linear_held = relative_residual(least_squares_transform(*fit_new, *fit_old), *held_new, *held_old)
        model, steps = _train(fit_new, fit_old, settings, settings.max_steps, held_out)
        adapter_held = held_out(model.export())
    else:  # nothing to choose on: the cap
        steps, adapter_held, linear_held = settings.max_steps, float("nan"), float("nan")
    final, _ = _train(new, old, settings, steps)
    adapter = final.export()
    return AdapterFit(
        transform=adapter,
        steps=steps,
        holdout_residual=adapter_held,
        holdout_residual_linear=linear_held,
        residual=_residual(adapter, new, old),
        residual_linear=relative_residual(least_squares_transform(*new, *old), *new, *old),
        parameters=sum(a.size for a in adapter.to_tensors().values()),
        seconds=time.perf_counter() - started,
    )


def _residual(adapter: ResidualMLPTransform, new: Pair, old: Pair) -> float:
    """The relative residual of what feast_bc serves (numpy, float32)."""
    return mapped_relative_residual(tuple(adapter.transform(z) for z in new), old)
