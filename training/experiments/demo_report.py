"""The demo's report: what it records per version and strategy, the bar, and how it is printed and plotted.

Split from :mod:`training.experiments.demo` (the run) so that the schema a reader of
``report.json`` needs, and the rendering, sit apart from the training and serving steps.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, computed_field

from training.config import TrainingConfig
from training.experiments.consumers.feast_source import FeastCheck
from training.record import TrainedVersion

#: The recommended method first (its repo is ``feature_repo``), the paper's method, and No-BC.
STRATEGIES = ("bc-aligner-plus", "bc-aligner", "nobc")
RECOMMENDED = "bc-aligner-plus"
DISPLAY = {"bc-aligner-plus": "BC-Aligner+", "bc-aligner": "BC-Aligner", "nobc": "No-BC"}
#: The bar the recommended method is held to at every version >= 1.
MAX_AUC_GAP = 0.02
MIN_RECALL_RATIO = 0.97


class StrategyVersion(TrainedVersion):
    """One strategy at one version of the demo: the version's record, and what its consumer saw."""

    strategy: str
    consumer_auc: float | None = Field(description="the version-0 consumer on this version's v0 pin (None at v0)")
    feast: FeastCheck

    @computed_field
    @property
    def recall_at_50(self) -> float:
        return self.recall

    @computed_field
    @property
    def align_error_v0(self) -> float | None:
        """Mean L2 between this version's v0 pin and M_0's vectors on this version's graph."""
        return self.alignment_error[0]["all"] if 0 in self.alignment_error else None


class DemoVersion(BaseModel):
    version: int
    strategies: dict[str, StrategyVersion]
    reference_recall_at_50: float = Field(description="Fix-M0 (never update): the intended-task cost of not updating")
    reference_consumer_auc: float | None = Field(description="the consumer on true version-0 embeddings (Fix-M0)")

    def meets_bar(self) -> bool | None:
        """The recommended method at this version: consumer AUC within MAX_AUC_GAP of Fix-M0's and
        Recall@50 at least MIN_RECALL_RATIO of No-BC's (None at version 0: nothing to compare)."""
        ours, nobc = self.strategies[RECOMMENDED], self.strategies["nobc"]
        if ours.consumer_auc is None or self.reference_consumer_auc is None:
            return None
        return (
            ours.consumer_auc >= self.reference_consumer_auc - MAX_AUC_GAP
            and ours.recall_at_50 >= MIN_RECALL_RATIO * nobc.recall_at_50
        )


class DemoReport(BaseModel):
    data: str
    online_store: str
    repos: dict[str, str]
    config: TrainingConfig
    consumer: dict
    versions: list[DemoVersion]
    wall_seconds: float
    all_feast_checks_passed: bool
    recommended: str = RECOMMENDED
    bar_met: bool | None = Field(None, description="the recommended method met its bar at every version >= 1")


def render_version(row: DemoVersion) -> str:
    fmt = lambda v, spec=".4f": "-" if v is None else format(v, spec)  # noqa: E731
    worst = max(max(s.feast.max_abs_diff_user, s.feast.max_abs_diff_item) for s in row.strategies.values())
    columns = [row.strategies[name] for name in STRATEGIES]
    bar = row.meets_bar()
    verdict = "" if bar is None else f"; {DISPLAY[RECOMMENDED]} {'meets' if bar else 'MISSES'} its bar"
    lines = [
        f"version {row.version}  (dim {columns[0].dim}; v0 values read through Feast, max |Feast - offline| {worst:.1e}{verdict})",
        f"  {'':28}" + "".join(f"{DISPLAY[n]:>13}" for n in STRATEGIES) + f"{'Fix-M0 ref':>13}",
        f"  {'intended Recall@50':28}"
        + "".join(f"{fmt(s.recall_at_50):>13}" for s in columns)
        + f"{fmt(row.reference_recall_at_50):>13}",
        f"  {'consumer AUC (v0 pin)':28}"
        + "".join(f"{fmt(s.consumer_auc):>13}" for s in columns)
        + f"{fmt(row.reference_consumer_auc):>13}",
        f"  {'alignment error of v0 pin':28}" + "".join(f"{fmt(s.align_error_v0):>13}" for s in columns) + f"{'0':>13}",
    ]
    return "\n".join(lines)


def plot_report(report: DemoReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = [r.version for r in report.versions]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [
        ("intended Recall@50", lambda s: s.recall_at_50),
        ("consumer AUC on its v0 pin", lambda s: s.consumer_auc),
        ("alignment error of v0 pin", lambda s: s.align_error_v0),
    ]
    labels = {name: f"{DISPLAY[name]} (served by Feast)" for name in STRATEGIES}
    references = [lambda r: r.reference_recall_at_50, lambda r: r.reference_consumer_auc, lambda r: 0.0]
    for ax, (title, get), ref in zip(axes, panels, references, strict=True):
        for name in STRATEGIES:
            ys = [get(r.strategies[name]) for r in report.versions]
            xs = [v for v, y in zip(versions, ys, strict=True) if y is not None]
            ax.plot(xs, [y for y in ys if y is not None], marker="o", label=labels[name])
        ys = [ref(r) for r in report.versions]
        xs = [v for v, y in zip(versions, ys, strict=True) if y is not None]
        ax.plot(xs, [y for y in ys if y is not None], ls="--", color="gray", label="Fix-M0 (never update)")
        ax.set_title(title)
        ax.set_xlabel("embedding version")
        ax.set_xticks(versions)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"feast-bc demo on {report.data}: a version-0 consumer across {len(versions) - 1} embedding updates")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
