"""Intended-task benchmark: the project's embedding models against the recommenders a user would pick instead.

Why: every compatibility figure is only worth something on models an embedding team would ship.
This measures, on the project's own splits (``training.data.splits.version_splits``: version k
trains up to t_k and is validated on the next slice, training positives masked, Recall@K averaged
over the users with validation items -- :class:`training.evaluation.RecallEvaluator`), at every
version:

* ``popularity``  -- items ranked by their training interaction count (the floor);
* ``als``         -- ``implicit``'s ALS on the binary user x item matrix, best of the grid
  :data:`ALS_GRID` on validation Recall@50;
* ``bpr``         -- ``implicit``'s BPR, best of :data:`BPR_GRID`;
* ``<profile>``   -- the project's own fresh BPR-only model (what No-BC trains at every version) for
  each ``--profiles`` entry (``default``: LightGCN or whatever the default is; ``fast``: the
  paper's PinSAGE at the reproduction budget), trained by :func:`training.loop.fit_model` exactly
  as a strategy trains it.

The anchors are selected on the same validation slice that is reported, as the project's own
models select their checkpoint on it: both sides get the same advantage. Wall time per model (the
whole grid for the anchors, and the best fit alone) is reported too. ``implicit`` is a benchmark
dependency (``pip install -e '.[bench]'``).

    python benchmarks/intended.py                                  # ml-100k + synthetic-large, default + fast
    python benchmarks/intended.py --data ml-100k --profiles default --versions 0,1
    python benchmarks/intended.py --data table --data-path ratings.csv --columns user=u,item=i,timestamp=t

Writes ``--out`` (default docs/benchmarks/intended.json) and a PNG beside it; prints the table
docs/RESULTS.md ("Intended task") shows. Run it alone (docs/DEVELOPING.md); the load average is recorded.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from training.config import PROFILE_NAMES, profile  # noqa: E402
from training.data.config import DataConfig, MovieLensData, SyntheticData, default_movielens_dir, load_dataset  # noqa: E402
from training.data.dataset import InteractionDataset  # noqa: E402
from training.data.options import add_data_arguments, data_config_from_args  # noqa: E402
from training.data.splits import VersionSplit, version_splits  # noqa: E402
from training.evaluation import PRIMARY_K, RecallEvaluator  # noqa: E402
from training.loop import IntendedTask, fit_model  # noqa: E402
from training.models.factory import ModelSpec, build_model  # noqa: E402

#: implicit ALS grid (factors x regularization x iterations x alpha): 36 fits of 0.2-3 s on ml-100k.
ALS_GRID = {"factors": (32, 64, 128), "regularization": (0.01, 0.05, 0.1), "iterations": (15, 30), "alpha": (1.0, 4.0)}
#: implicit BPR grid (factors x learning rate x iterations): 8 fits.
BPR_GRID = {"factors": (64, 256), "learning_rate": (0.01, 0.05), "iterations": (100, 300)}
#: The larger catalogue of benchmarks/compat.py (~10x ml-100k's items at about its interaction count).
SYNTHETIC_LARGE = SyntheticData(num_users=5000, num_items=16820, min_interactions=8, max_interactions=32)
PRESETS = ("ml-100k", "synthetic-large")


def preset(name: str, ml_path: Path) -> DataConfig:
    return MovieLensData(path=ml_path) if name == "ml-100k" else SYNTHETIC_LARGE


def evaluate(evaluator: RecallEvaluator, users: np.ndarray, items: np.ndarray) -> dict[int, float]:
    return evaluator.evaluate(
        torch.from_numpy(np.ascontiguousarray(users, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32)),
    )


def _user_items(split: VersionSplit):
    from scipy.sparse import csr_matrix

    matrix = csr_matrix(
        (np.ones(len(split.train_user), dtype=np.float32), (split.train_user, split.train_item)),
        shape=(split.num_users, split.num_items),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # binary: an interaction counts once, as the evaluator's masking does
    return matrix


def popularity(split: VersionSplit, evaluator: RecallEvaluator) -> dict:
    started = time.perf_counter()
    counts = np.bincount(split.train_item, minlength=split.num_items).astype(np.float32)
    recall = evaluate(evaluator, np.ones((split.num_users, 1)), counts[:, None])
    return {"recall": recall, "seconds": time.perf_counter() - started, "params": {}}


def implicit_grid(kind: str, split: VersionSplit, evaluator: RecallEvaluator, threads: int, seed: int) -> dict:
    """Every point of the grid fitted on the version's training matrix; the best on Recall@50 kept."""
    grid = ALS_GRID if kind == "als" else BPR_GRID
    matrix = _user_items(split)
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, not BLAS's
        best, total = _fit_grid(kind, grid, matrix, evaluator, threads, seed)
    assert best is not None
    return {**best, "grid_seconds": total, "grid_size": len(list(itertools.product(*grid.values())))}


def _fit_grid(kind, grid, matrix, evaluator, threads, seed):
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    best, total = None, 0.0
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values, strict=True))
        started = time.perf_counter()
        if kind == "als":
            model = AlternatingLeastSquares(**params, num_threads=threads, random_state=seed)
        else:
            model = BayesianPersonalizedRanking(**params, num_threads=threads, random_state=seed)
        model.fit(matrix, show_progress=False)
        seconds = time.perf_counter() - started
        total += seconds
        recall = evaluate(evaluator, model.user_factors, model.item_factors)
        if best is None or recall[PRIMARY_K] > best["recall"][PRIMARY_K]:
            best = {"recall": recall, "seconds": seconds, "params": params}
    return best, total


def own_model(
    profile_name: str, dataset: InteractionDataset, split: VersionSplit, version: int, seed: int, overrides: dict
) -> dict:
    """The fresh BPR-only model of ``profile_name`` at ``version`` (what No-BC trains there)."""
    config = profile(profile_name, **overrides)
    task = IntendedTask.for_split(dataset, split, config, torch.device("cpu"))
    spec = ModelSpec.for_dataset(config.model, config.dims[version], config.layers[version], dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
    fit = fit_model(
        model,
        task,
        config,
        np.random.default_rng(seed),
        epochs=config.epochs,
        progress=True,
        desc=f"{profile_name} v{version}",
    )
    return {
        "recall": fit.val_recall,
        "seconds": fit.seconds,
        "params": {
            "model": spec.kind,
            "dim": spec.dim,
            "layers": spec.num_layers,
            "selected_epoch": fit.selected_epoch,
            "epochs_run": fit.epochs_run,
        },
    }


def run(
    name: str, data: DataConfig, versions: list[int], profiles: list[str], threads: int, seed: int, overrides: dict
) -> dict:
    dataset = load_dataset(data)
    # The splits of the profiles' time slices (every profile uses the paper's).
    splits = version_splits(dataset, profile(profiles[0] if profiles else "default").time_slices)
    rows = []
    for version in versions:
        split = splits[version]
        evaluator = RecallEvaluator(split)
        models = {
            "popularity": popularity(split, evaluator),
            "als": implicit_grid("als", split, evaluator, threads, seed),
            "bpr": implicit_grid("bpr", split, evaluator, threads, seed),
        }
        for p in profiles:
            models[p] = own_model(p, dataset, split, version, seed, overrides)
        row = {"version": version, "summary": split.summary(), "models": models}
        rows.append(row)
        print(
            f"{name} v{version}: " + ", ".join(f"{m} {r['recall'][PRIMARY_K]:.4f}" for m, r in models.items()),
            flush=True,
        )
    return {"dataset": dataset.name, "rows": rows}


def render(name: str, result: dict, profiles: list[str]) -> str:
    anchors = ["popularity", "als", "bpr"]
    header = ["version", *anchors, *profiles, "best anchor", *(f"{p} / best anchor" for p in profiles)]
    lines = [f"**{name}** ({result['dataset']}), Recall@{PRIMARY_K}:", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for row in result["rows"]:
        r = {m: v["recall"][PRIMARY_K] for m, v in row["models"].items()}
        best = max(r[a] for a in anchors)
        cells = [str(row["version"]), *(f"{r[a]:.4f}" for a in anchors), *(f"{r[p]:.4f}" for p in profiles)]
        cells += [f"{best:.4f}", *(f"{r[p] / best:.3f}" for p in profiles)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Wall seconds per model (anchors: best fit / whole grid):", ""]
    lines.append("| version | " + " | ".join([*anchors, *profiles]) + " |")
    lines.append("|" + "---|" * (1 + len(anchors) + len(profiles)))
    for row in result["rows"]:
        m = row["models"]
        cells = [f"{m['popularity']['seconds']:.2f}"]
        cells += [f"{m[a]['seconds']:.1f} / {m[a]['grid_seconds']:.0f}" for a in ("als", "bpr")]
        cells += [f"{m[p]['seconds']:.0f}" for p in profiles]
        lines.append(f"| {row['version']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, profiles: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items(), strict=True):
        versions = [row["version"] for row in result["rows"]]
        for model in ["popularity", "als", "bpr", *profiles]:
            values = [row["models"][model]["recall"][PRIMARY_K] for row in result["rows"]]
            style = "-o" if model in profiles else "--s"
            ax.plot(versions, values, style, label=model)
        ax.set_title(f"{name}: intended task")
        ax.set_xlabel("version")
        ax.set_ylabel(f"validation Recall@{PRIMARY_K}")
        ax.set_xticks(versions)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(p, default_help=f"default: {','.join(PRESETS)}; presets may be comma-separated")
    p.add_argument(
        "--ml-path", type=Path, default=default_movielens_dir(), help="MovieLens 100K for the ml-100k preset"
    )
    p.add_argument("--versions", default="0,1,2,3,4", help="comma-separated version numbers (default all five)")
    p.add_argument(
        "--profiles", default="default,fast", help=f"training profiles to train ({', '.join(PROFILE_NAMES)})"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every profile")
    p.add_argument("--threads", type=int, default=2, help="torch and implicit threads (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/intended.json"))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    profiles = [x.strip() for x in args.profiles.split(",") if x.strip()]
    unknown = [x for x in profiles if x not in PROFILE_NAMES]
    if unknown:
        p.error(f"unknown profile(s) {', '.join(unknown)}; choose from {', '.join(PROFILE_NAMES)}")
    try:
        versions = [int(v) for v in args.versions.split(",")]
    except ValueError:
        p.error(f"--versions takes comma-separated integers, got {args.versions!r}")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = _value(value.strip())

    names = (args.data or ",".join(PRESETS)).split(",")
    if all(n in PRESETS for n in names):
        datasets = {n: preset(n, args.ml_path) for n in names}
    else:
        datasets = {args.data: data_config_from_args(args)}

    report = {
        "command": " ".join(["python benchmarks/intended.py", *(argv if argv is not None else sys.argv[1:])]),
        "loadavg_start": os.getloadavg()[0],
        "als_grid": ALS_GRID,
        "bpr_grid": BPR_GRID,
        "threads": args.threads,
        "results": {},
    }
    started = time.perf_counter()
    for name, data in datasets.items():
        result = run(name, data, versions, profiles, args.threads, args.seed, overrides)
        report["results"][name] = result
        print("\n" + render(name, result, profiles) + "\n", flush=True)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    report["loadavg_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report["results"], profiles, args.out.with_suffix(".png"))
    print(
        f"wall {report['wall_seconds'] / 60:.1f} min, load {report['loadavg_start']:.2f} -> {report['loadavg_end']:.2f}"
    )
    return 0


if __name__ == "__main__":
    from training.errors import TrainingError

    try:
        raise SystemExit(main())
    except TrainingError as exc:  # bad input (a missing data set, a bad --set): one line, no traceback
        raise SystemExit(f"intended.py: {exc}") from None
