"""What a reproduction run is configured with: the named profiles and :class:`ReproduceConfig`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.config import TrainingConfig, profile
from training.data.config import DataConfig, MovieLensData, SyntheticData
from training.errors import ConfigError
from training.experiments.consumers.mlp import ConsumerSettings
from training.strategies import ALIASES, STRATEGY_NAMES, StrategyName, StrategySpec, make_strategy

REFERENCES: tuple[str, ...] = ("fix-m0", "nobc")
JOINT_STRATEGIES: tuple[str, ...] = ("joint-notrans", "joint-lin-sloss", "bc-aligner", "bc-aligner-plus")
#: Read through Feast by default (when run): the paper's method and ours.
FEAST_DEFAULT: tuple[str, ...] = ("bc-aligner", "bc-aligner-plus")
REPORT_FILES = ("results.json", "report.md")


class ReproduceProfile(BaseModel):
    """A named bundle of defaults for a reproduction run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str
    training_profile: str
    training_overrides: dict = Field(default_factory=dict)
    consumer: ConsumerSettings
    data: DataConfig


PROFILES: dict[str, ReproduceProfile] = {
    "quick": ReproduceProfile(
        description="synthetic data, small dims, 2x2 consumer grid, 3 seeds: the pipeline in ~2 minutes",
        training_profile="demo",
        training_overrides=dict(
            batch_size=1024,
            epochs=30,
            eval_every=5,
            select_after_epoch=10,
            finetune_epochs=15,
            posthoc_epochs=40,
            posthoc_eval_every=5,
            posthoc_select_after_epoch=10,
        ),
        consumer=ConsumerSettings(
            hidden_dims=(32, 128),
            dropouts=(0.0, 0.5),
            num_seeds=3,
            max_epochs=100,
            patience=15,
            edge_max_epochs=20,
            edge_patience=4,
        ),
        data=SyntheticData(),
    ),
    "full": ReproduceProfile(
        description="MovieLens 100K, paper dims (training profile 'default': LightGCN), the paper's 4x3 consumer "
        "grid, 10 seeds",
        training_profile="default",
        consumer=ConsumerSettings(num_seeds=10, max_epochs=300, patience=30, edge_max_epochs=30, edge_patience=4),
        data=MovieLensData(),
    ),
}


class ReproduceConfig(BaseModel):
    """Everything a reproduction run depends on (recorded in results.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str
    data: DataConfig
    training: TrainingConfig
    consumer: ConsumerSettings
    strategies: tuple[StrategyName, ...] = STRATEGY_NAMES  # type: ignore[assignment]
    #: Extra methods under their own labels (ablations): label -> strategy and its parameters.
    variants: dict[str, StrategySpec] = Field(default_factory=dict)
    feast_strategies: tuple[str, ...] = FEAST_DEFAULT
    lam: float = Field(16.0, ge=0, description="λ of the joint strategies")
    seed: int = Field(42, description="embedding-model seed (one run per strategy, as the paper)")
    device: str = "cpu"
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads for the run (default: torch's); 1 on a shared machine"
    )

    @model_validator(mode="after")
    def _references_present(self) -> ReproduceConfig:
        missing = [r for r in REFERENCES if r not in self.strategies]
        if missing:
            raise ValueError(f"strategies must include the references {', '.join(missing)}")
        clash = [v for v in self.variants if v in STRATEGY_NAMES or v in ALIASES]
        if clash:
            raise ValueError(f"variant labels {clash} are strategy names; give variants labels of their own")
        extra = [s for s in self.feast_strategies if s not in self.methods()]
        if extra:
            raise ValueError(f"feast_strategies {extra} are not among the methods run")
        return self

    def methods(self) -> dict[str, StrategySpec]:
        """Every method of the run, label -> spec, in run order (Fix-M0 first); joint ones get ``lam``."""
        out = {}
        for name in self.strategies:
            out[name] = make_strategy(name, lam=self.lam if name in JOINT_STRATEGIES else None).spec()
        for label, spec in self.variants.items():
            out[label] = (
                spec
                if spec.lam is not None or spec.name not in JOINT_STRATEGIES
                else spec.model_copy(update={"lam": self.lam})
            )
        return out


def make_config(
    profile_name: str = "full",
    *,
    data: DataConfig | None = None,
    training_profile: str | None = None,
    training_overrides: dict | None = None,
    consumer_overrides: dict | None = None,
    strategies: list[str] | None = None,
    feast_strategies: list[str] | None = None,
    variants: dict[str, StrategySpec] | None = None,
    seed: int = 42,
    lam: float | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> ReproduceConfig:
    """A run's config from a profile plus overrides; the references Fix-M0 and No-BC are always added
    (every Δ% is relative to one of them, and C_0 is trained on Fix-M0's embeddings)."""
    if profile_name not in PROFILES:
        raise ConfigError(f"unknown reproduce profile {profile_name!r}; choose one of {', '.join(PROFILES)}")
    base = PROFILES[profile_name]
    names = _canonical(strategies) if strategies else list(STRATEGY_NAMES)
    names = [s for s in STRATEGY_NAMES if s in set(names) | set(REFERENCES)]
    if feast_strategies is None:
        feast = [s for s in FEAST_DEFAULT if s in names]
    else:
        feast = [s if s in (variants or {}) else _canonical([s])[0] for s in feast_strategies]
    try:
        overrides = (
            {**base.training_overrides, **(training_overrides or {})}
            if training_profile is None
            else dict(training_overrides or {})
        )
        return ReproduceConfig(
            profile=profile_name,
            data=data or base.data,
            training=profile(training_profile or base.training_profile, **overrides),
            consumer=base.consumer.model_copy(update=consumer_overrides or {}),
            strategies=tuple(names),
            variants=dict(variants or {}),
            feast_strategies=tuple(feast),
            lam=16.0 if lam is None else lam,
            seed=seed,
            device=device,
            threads=threads,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid reproduce configuration: {exc}") from None


def _canonical(names: list[str]) -> list[str]:
    out = []
    for name in names:
        canonical = ALIASES.get(name, name)
        if canonical not in STRATEGY_NAMES:
            raise ConfigError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGY_NAMES)}")
        out.append(canonical)
    return out
