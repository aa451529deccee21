"""PNG plots of a reproduction run, one line per method (the notebook's figures, for all methods).

* ``intended.png``   -- (Recall@50 − No-BC's) × 100 per version;
* ``unintended.png`` -- (mean AUC over the evaluated tasks − Fix-M0's) × 100 per version (1..4);
* ``alignment.png``  -- alignment error to Fix-M0's embeddings per version;
* ``unintended_by_task.png`` -- BC-Aligner's Δ% vs Fix-M0 per task and version.

matplotlib is imported on use with the non-interactive Agg backend (no display on a server).
"""

from __future__ import annotations

from pathlib import Path

from training.experiments.consumers.tasks import TASK_NAMES
from training.experiments.report import DISPLAY_NAMES, ReproduceResults

PLOT_FILES = {
    "intended": "intended.png",
    "unintended": "unintended.png",
    "alignment": "alignment.png",
    "unintended_by_task": "unintended_by_task.png",
}
_TITLES = {
    "intended": "Intended task: Recall@50 − No-BC (points)",
    "unintended": "Unintended tasks: mean AUC − Fix-M0 (points)",
    "alignment": "Alignment error to Fix-M0 (mean L2)",
    "unintended_by_task": "Per task: Δ% vs Fix-M0 (BC-Aligner dashed, ours solid)",
}
_STYLES = {  # one colour per method; the references dashed, BC-Aligner thick
    "fix-m0": dict(linestyle="--", color="black"),
    "finetune-m0": dict(color="tab:brown"),
    "nobc": dict(linestyle="--", color="tab:red"),
    "posthoc-lin-sloss": dict(linestyle=":", color="tab:orange"),
    "posthoc-lin-mloss": dict(linestyle=":", color="tab:pink"),
    "joint-notrans": dict(color="tab:purple"),
    "joint-lin-sloss": dict(color="tab:blue"),
    "bc-aligner": dict(linewidth=2.0, color="tab:green"),
    "bc-aligner-plus": dict(linewidth=2.8, color="tab:red"),
}


def plot_titles() -> dict[str, str]:
    return dict(_TITLES)


def write_plots(results: ReproduceResults, out_dir: str | Path) -> dict[str, Path]:
    """Write every plot into ``out_dir``; returns {plot name: path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    series = {
        "intended": ("intended_delta_points", "Δ Recall@50 (points)"),
        "unintended": ("unintended_delta_points", "Δ ROC-AUC (points)"),
        "alignment": ("alignment_error", "mean L2 distance"),
    }
    for name, (field, ylabel) in series.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for strategy in results.strategies:
            points = [(r.version, getattr(r, field)) for r in results.per_version if r.strategy == strategy]
            points = [(v, y) for v, y in points if y is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=DISPLAY_NAMES.get(strategy, strategy), **_STYLES.get(strategy, {}))
        _finish(ax, _TITLES[name], ylabel)
        written[name] = _save(fig, out / PLOT_FILES[name])

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = dict(zip(TASK_NAMES, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"), strict=True))
    for method, style in (("bc-aligner", "--"), ("bc-aligner-plus", "-")):
        rows = [r for r in results.per_task if r.strategy == method and r.version is not None]
        for task in dict.fromkeys(r.task for r in rows):
            points = sorted((r.version, r.delta_pct) for r in rows if r.task == task)
            ax.plot(
                *zip(*points, strict=True),
                marker="x",
                linestyle=style,
                color=colours[task],
                label=f"{task} ({'ours' if method == 'bc-aligner-plus' else 'BC-Aligner'})",
            )
    ax.axhline(0.0, color="gray", linestyle="--", linewidth=1)
    _finish(ax, _TITLES["unintended_by_task"], "Δ ROC-AUC vs Fix-M0 (%)")
    written["unintended_by_task"] = _save(fig, out / PLOT_FILES["unintended_by_task"])
    return written


def _finish(ax, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("version")
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
