"""Compatibility benchmark: what a version-0 consumer loses, per method and per task, in minutes.

The full reproduction (`python -m training reproduce`, ~50 minutes) is the reference measurement;
this is the loop to iterate with. It runs the *same* pipeline (training.experiments.reproduce.run_reproduction:
the same strategies, consumers, protocol and aggregation) on smaller settings:

* ``ml-100k``  -- MovieLens 100K, the default profile (LightGCN at the paper's dims) for versions
  0..2 (time slices 0.5/0.6/0.7/0.8: the user-level tasks are evaluated from version 2 on, so
  version 2 is the first that shows them; ``--versions 5`` for all five); the PinSAGE figures of
  earlier runs stay in docs/RESULTS.md;
* ``synthetic`` -- the default synthetic data and the ``demo`` profile (what `make demo` trains), all
  five versions;
* ``synthetic-large`` -- ten times ml-100k's catalogue at about its interaction count (16,820 items,
  5,000 users, ~100k interactions), the default profile with versions 0..2 (every model trained
  until its validation recall stops improving): not in the default run.

Consumers: hidden 128/256 x dropout 0/0.5 on seed 0, then 3 seeds (the paper: 4 x 3 and 10); the
edge task (58k training rows on ml-100k, most of the consumers' time) stops at 15 epochs.
Printed per data set and method: alignment error (mean L2 to Fix-M0's version-0 embeddings, over
versions), intended Δ% vs No-BC, unintended Δ% vs Fix-M0 (mean of the five tasks) and per task,
total, and the training seconds. ``--out`` keeps each run's results.json and a PNG per data set.

    python benchmarks/compat.py                                   # ml-100k + synthetic, 8.5 minutes alone
    python benchmarks/compat.py --data ml-100k --methods bc-aligner,bc-aligner-plus \\
        --variant plus-cold=bc-aligner-plus:warm_start=false      # an ablation row
    python benchmarks/compat.py --data ml-100k --set learning_rate=4e-3   # a profile change (all methods)

Run it alone on the machine (docs/DEVELOPING.md); the load average is recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import profile  # noqa: E402
from training.data.config import MovieLensData, SyntheticData, default_movielens_dir  # noqa: E402
from training.experiments.consumers.mlp import ConsumerSettings  # noqa: E402
from training.experiments.consumers.tasks import TASK_NAMES  # noqa: E402
from training.experiments.report import name_of  # noqa: E402
from training.experiments.reproduce import run_reproduction  # noqa: E402
from training.experiments.reproduce_config import ReproduceConfig  # noqa: E402
from training.strategies import parse_strategy_spec  # noqa: E402

DEFAULT_METHODS = ("fix-m0", "nobc", "nobc-warm", "posthoc-lin-sloss", "bc-aligner", "bc-aligner-plus")
CONSUMERS = ConsumerSettings(
    hidden_dims=(128, 256),
    dropouts=(0.0, 0.5),
    num_seeds=3,
    max_epochs=300,
    patience=30,
    edge_max_epochs=15,
    edge_patience=3,
)
SHORT_TASKS = {
    "binary-edge-rating": "edge",
    "user-activity": "user-act",
    "user-positive-activity": "user-pos",
    "binary-item-rating-avg": "item-avg",
    "binary-item-rating-std": "item-std",
}


def data_sets(ml_path: Path, versions: int = 3) -> dict[str, tuple]:
    """name -> (data config, training profile, profile overrides); ``versions`` of the paper's five
    for ml-100k and synthetic-large (the paper's slices, dims and layers, cut after that many)."""
    default = profile("default")
    three = dict(
        time_slices=default.time_slices[: versions + 1], dims=default.dims[:versions], layers=default.layers[:versions]
    )
    return {
        "ml-100k": (MovieLensData(path=ml_path), "default", three),
        "synthetic": (SyntheticData(), "demo", {}),
        # The default profile's budget follows the data (patience) for every method.
        "synthetic-large": (
            SyntheticData(num_users=5000, num_items=16820, min_interactions=8, max_interactions=32),
            "default",
            three,
        ),
    }


def _value(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="ml-100k,synthetic", help="comma-separated: ml-100k, synthetic, synthetic-large")
    p.add_argument("--ml-path", type=Path, default=default_movielens_dir())
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="strategies (fix-m0 and nobc always run: they are the references)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=SPEC",
        help="extra method, e.g. plus-cold=bc-aligner-plus:warm_start=false (repeatable)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training-profile override for every method, e.g. learning_rate=4e-3 (repeatable)",
    )
    p.add_argument(
        "--versions",
        type=int,
        default=3,
        choices=range(2, 6),
        metavar="{2..5}",
        help="ml-100k and synthetic-large: versions 0..N-1 of the paper's five (default 3)",
    )
    p.add_argument("--seeds", type=int, default=CONSUMERS.num_seeds)
    p.add_argument("--lam", type=float, default=16.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, help="directory for each data set's results.json and compat PNG")
    p.add_argument("--workdir", type=Path, help="keep the model cache here between runs")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = _value(value.strip())
    variants = {}
    for item in args.variant:
        label, _, spec = item.partition("=")
        variants[label.strip()] = parse_strategy_spec(spec)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    methods = [m for m in ("fix-m0", "nobc") if m not in methods] + methods
    sets = data_sets(args.ml_path, args.versions)
    report: dict = {
        "command": " ".join(["python benchmarks/compat.py", *(argv if argv is not None else sys.argv[1:])]),
        "loadavg_start": os.getloadavg()[0],
        "runs": {},
    }
    started = time.perf_counter()
    for name in [d.strip() for d in args.data.split(",") if d.strip()]:
        if name not in sets:
            p.error(f"unknown data set {name!r}; choose from {', '.join(sets)}")
        data, training_profile, base = sets[name]
        config = ReproduceConfig(
            profile=f"compat-{name}",
            data=data,
            training=profile(training_profile, **{**base, **overrides}),
            consumer=CONSUMERS.model_copy(update={"num_seeds": args.seeds}),
            strategies=tuple(methods),
            variants=variants,
            feast_strategies=(),
            lam=args.lam,
            threads=args.threads,
        )
        t = time.perf_counter()
        out = (args.out / name) if args.out else Path(os.environ.get("TMPDIR", "/tmp")) / f"compat-{os.getpid()}" / name
        workdir = (args.workdir / name) if args.workdir else None
        results = run_reproduction(config, out, workdir=workdir, progress=args.progress, command=report["command"])
        wall = time.perf_counter() - t
        rows = _rows(results)
        report["runs"][name] = {
            "wall_seconds": round(wall, 1),
            "rows": rows,
            "dims": list(config.training.dims),
            "training": config.training.model_dump(mode="json"),
            "overrides": overrides,
        }
        print(
            f"\n## {name}: {results.meta.dataset_summary}; dims {list(config.training.dims)}; "
            f"wall {wall / 60:.1f} min, load {results.meta.machine.loadavg_start:.2f} -> {results.meta.machine.loadavg_end:.2f}"
        )
        print(render(rows))
        if args.out:
            _plot(rows, args.out / f"compat_{name}.png", name)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    report["loadavg_end"] = os.getloadavg()[0]
    print(f"\ntotal wall {report['wall_seconds'] / 60:.1f} min")
    if args.out:
        (args.out / "compat.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _rows(results) -> list[dict]:
    per_task = {(r.strategy, r.task): r.delta_pct for r in results.per_task if r.version is None}
    rows = []
    for s in results.summary:
        result = results.strategies[s.strategy]
        rows.append(
            {
                "method": s.strategy,
                "params": result.params,
                "alignment_error": s.alignment_error,
                "intended_delta_pct": s.intended_delta_pct,
                "unintended_delta_pct": s.unintended_delta_pct,
                "total_delta_pct": s.total_delta_pct,
                "tasks": {t: per_task.get((s.strategy, t)) for t in TASK_NAMES},
                "recall_per_version": [v.val_recall[50] for v in result.versions],
                "train_seconds": round(sum(v.train_seconds for v in result.versions), 1),
            }
        )
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table (the form docs/RESULTS.md quotes)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def render(rows: list[dict]) -> str:
    header = ["method", "align err", "intended Δ%", "unintended Δ%", "total", *(SHORT_TASKS[t] for t in TASK_NAMES)]
    cells = [
        [
            name_of(r["method"]),
            f"{r['alignment_error']:.3f}",
            f"{r['intended_delta_pct']:+.2f}",
            f"{r['unintended_delta_pct']:+.2f}",
            f"{r['total_delta_pct']:+.2f}",
            *("–" if r["tasks"][t] is None else f"{r['tasks'][t]:+.2f}" for t in TASK_NAMES),
            f"{r['train_seconds']:.0f}",
        ]
        for r in rows
    ]
    return markdown_table([*header, "train s"], cells)


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    shown = [r for r in rows if r["method"] != "fix-m0"]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / max(len(shown), 1)
    x = np.arange(len(TASK_NAMES) + 1)
    for i, r in enumerate(shown):
        values = [r["tasks"][t] if r["tasks"][t] is not None else np.nan for t in TASK_NAMES] + [
            r["unintended_delta_pct"]
        ]
        ax.bar(x + (i - (len(shown) - 1) / 2) * width, np.maximum(values, -40), width, label=name_of(r["method"]))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axhline(-3, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, [SHORT_TASKS[t] for t in TASK_NAMES] + ["mean"])
    ax.set_ylabel("Δ% ROC-AUC vs Fix-M0 (clipped at -40)")
    ax.set_title(f"compat benchmark, {title}: what the version-0 consumer loses")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
