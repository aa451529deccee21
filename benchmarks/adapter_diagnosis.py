"""Diagnosis: can one backward map keep the version-0 consumers of a model trained from scratch?

Issue 21: on strong models BC-Aligner+ keeps the intended task by falling back to (nearly) the
fresh No-BC model, and the linear B_k that maps that model back is where the consumers pay (ml-100k
v3-v4 alignment error ~1.07; synthetic-large item-std). This isolates the map: the embedding model
of every version is the No-BC model itself (so the intended task is No-BC's, by construction), and
the version-0 consumers (trained on Fix-M0's embeddings, the compat benchmark's grid) read it
through

* ``linear``: the least-squares linear map from z_k straight onto version 0 (post-hoc, one map per
  target: what a linear chain can at best give these embeddings);
* ``adapter-h<H>``: :func:`training.adapter_fit.fit_residual_adapter` -- that linear map plus a
  one-hidden-layer correction of width H (Drift-Adapter's residual MLP), its Adam steps chosen on
  10% of the users and items held out, then refit on all; served as feast_bc serves it (numpy,
  :class:`feast_bc.transforms.ResidualMLPTransform`).

Printed per map: the consumers' AUC change vs Fix-M0 per task and overall, the alignment error
(mean L2 to Fix-M0's version-0 embeddings), the relative residual on the entities the map was fitted
on and on held-out ones (a map that memorises the table would be perfect in-sample and poor on a new
entity), its size against the version-0 table's, and the fit seconds.

    python benchmarks/adapter_diagnosis.py --data synthetic-large --workdir W --out docs/benchmarks
    python benchmarks/adapter_diagnosis.py --data ml-100k --ml-path <ml-100k> --versions 5

``--workdir`` shares the model cache of benchmarks/compat.py's ``--workdir`` (same data set and
profile: the version-0 and No-BC models are not trained again). Run it alone (docs/DEVELOPING.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.compat import CONSUMERS, SHORT_TASKS, data_sets, markdown_table  # noqa: E402
from training.adapter_fit import AdapterSettings, fit_residual_adapter  # noqa: E402
from training.backward_fit import least_squares_transform, relative_residual  # noqa: E402
from training.cache import ModelCache  # noqa: E402
from training.chain import VersionChain, alignment_error  # noqa: E402
from training.config import profile  # noqa: E402
from training.data import load_dataset, version_splits  # noqa: E402
from training.data.config import default_movielens_dir  # noqa: E402
from training.errors import TrainingError  # noqa: E402
from training.experiments.consumers.protocol import train_task_consumers  # noqa: E402
from training.experiments.consumers.tasks import TASK_NAMES, TaskLabels  # noqa: E402
from training.experiments.report_aggregate import nan_mean  # noqa: E402
from training.strategies import make_strategy  # noqa: E402

CHAIN_SEED = 42  # the reproduction's and compat's


def _chain(name: str, dataset, config, cache, versions: int) -> list:
    chain = VersionChain(make_strategy(name), dataset, config, seed=CHAIN_SEED, cache=cache)
    return [chain.train_next() for _ in range(versions)]


def _map_rows(name: str, served: dict, reference: dict, consumers: dict, fits: list[dict]) -> dict:
    """One map's row: consumers per task (mean AUC over evaluated versions and seeds), errors, fits."""
    aucs = {task: nan_mean(a for v in c.evaluate_chain(served).values() for a in v) for task, c in consumers.items()}
    errors = [alignment_error(*served[k], *reference[k])["all"] for k in sorted(served)]
    return {"map": name, "task_auc": aucs, "alignment_error": float(np.mean(errors)), "fits": fits}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="synthetic-large", choices=["ml-100k", "synthetic-large"])
    p.add_argument("--ml-path", type=Path, default=default_movielens_dir())
    p.add_argument("--versions", type=int, default=3, choices=range(2, 6), metavar="{2..5}")
    p.add_argument("--hidden", default="64,256", help="comma-separated widths of the adapters' hidden layer")
    p.add_argument("--seeds", type=int, default=CONSUMERS.num_seeds, help="consumer seeds")
    p.add_argument("--workdir", type=Path, help="model cache (benchmarks/compat.py's --workdir is reused)")
    p.add_argument("--out", type=Path, help="directory for adapter_diagnosis_<data>.json and .png")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    try:
        widths = [int(h) for h in args.hidden.split(",") if h.strip()]
    except ValueError:
        p.error(f"--hidden must be comma-separated integers, got {args.hidden!r}")
    if not widths or min(widths) < 1:
        p.error("--hidden needs at least one width >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    data, training_profile, base = data_sets(args.ml_path, args.versions)[args.data]
    config = profile(training_profile, **base)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    try:
        dataset = load_dataset(data)
    except TrainingError as exc:  # a missing data set: one line, no traceback
        p.error(f"cannot load {args.data}: {exc}")
    labels = TaskLabels(dataset, version_splits(dataset, config.time_slices))
    with tempfile.TemporaryDirectory(prefix="adapter-diag-") as tmp:
        work = (args.workdir / args.data) if args.workdir else Path(tmp)
        cache = ModelCache(work / "model_cache")
        t = time.perf_counter()
        fix = _chain("fix-m0", dataset, config, cache, args.versions)
        nobc = _chain("nobc", dataset, config, cache, args.versions)
        train_seconds = time.perf_counter() - t
    reference = {o.version: (o.user_ver0, o.item_ver0) for o in fix}
    latest = {o.version: (o.user_embeddings, o.item_embeddings) for o in nobc}
    t = time.perf_counter()
    consumers = {
        task: train_task_consumers(task, labels, reference, CONSUMERS.model_copy(update={"num_seeds": args.seeds}))
        for task in TASK_NAMES
    }
    consumer_seconds = time.perf_counter() - t

    rows = [_map_rows("fix-m0", reference, reference, consumers, [])]
    served, fits = {0: reference[0]}, []
    for k in range(1, args.versions):
        t = time.perf_counter()
        b = least_squares_transform(*latest[k], *reference[k])
        served[k] = tuple((z @ b.T.astype(np.float64)).astype(np.float32) for z in latest[k])
        fits.append(
            {
                "version": k,
                "residual": relative_residual(b, *latest[k], *reference[k]),
                "parameters": int(b.size),
                "seconds": round(time.perf_counter() - t, 2),
            }
        )
    rows.append(_map_rows("linear", served, reference, consumers, fits))
    for width in widths:
        served, fits = {0: reference[0]}, []
        for k in range(1, args.versions):
            fit = fit_residual_adapter(latest[k], reference[k], AdapterSettings(hidden=width))
            served[k] = tuple(fit.transform.transform(z) for z in latest[k])
            fits.append(
                {
                    "version": k,
                    "residual": fit.residual,
                    "residual_linear": fit.residual_linear,
                    "holdout_residual": fit.holdout_residual,
                    "holdout_residual_linear": fit.holdout_residual_linear,
                    "steps": fit.steps,
                    "parameters": fit.parameters,
                    "seconds": round(fit.seconds, 2),
                }
            )
            print(
                f"adapter h{width} v{k}: residual {fit.residual_linear:.4f} -> {fit.residual:.4f} in-sample, "
                f"{fit.holdout_residual_linear:.4f} -> {fit.holdout_residual:.4f} held out; {fit.steps} steps, "
                f"{fit.seconds:.1f} s",
                flush=True,
            )
        rows.append(_map_rows(f"adapter-h{width}", served, reference, consumers, fits))

    ref_auc = rows[0]["task_auc"]
    ref_mean = nan_mean(ref_auc.values())
    for r in rows:
        r["task_delta_pct"] = {t: (r["task_auc"][t] - ref_auc[t]) / ref_auc[t] * 100 for t in TASK_NAMES}
        r["unintended_delta_pct"] = (nan_mean(r["task_auc"].values()) - ref_mean) / ref_mean * 100
    table_size = int(sum(z.size for z in reference[0]))
    report = {
        "command": " ".join(["python benchmarks/adapter_diagnosis.py", *(argv if argv is not None else sys.argv[1:])]),
        "data": args.data,
        "dataset": dataset.summary(),
        "dims": list(config.dims),
        "nobc_val_recall@50": [o.val_recall[50] for o in nobc],
        "version0_table_values": table_size,
        "adapter_settings": AdapterSettings().model_dump(),
        "seconds": {
            "models": round(train_seconds, 1),
            "consumers": round(consumer_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg()[0],
        "rows": rows,
    }
    print(f"\n## {args.data}: {dataset.summary()}; dims {list(config.dims)}; version-0 table {table_size} values")
    print(render(rows, table_size))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"adapter_diagnosis_{args.data}.json").write_text(json.dumps(report, indent=2) + "\n")
        _plot(rows, args.out / f"adapter_diagnosis_{args.data}.png", args.data)
    return 0


def render(rows: list[dict], table_size: int) -> str:
    header = ["map", "align err", "unintended Δ%", *(SHORT_TASKS[t] for t in TASK_NAMES)]
    header += ["residual (in-sample)", "residual (held out)", "size / v0 table", "fit s"]
    cells = []
    for r in rows:
        fits = r["fits"]
        held = [f["holdout_residual"] for f in fits if f.get("holdout_residual") is not None]
        cells.append(
            [
                r["map"],
                f"{r['alignment_error']:.3f}",
                f"{r['unintended_delta_pct']:+.2f}",
                *(f"{r['task_delta_pct'][t]:+.2f}" for t in TASK_NAMES),
                " / ".join(f"{f['residual']:.3f}" for f in fits) or "–",
                " / ".join(f"{h:.3f}" for h in held) or "–",
                " / ".join(f"{f['parameters'] / table_size:.2f}" for f in fits) or "–",
                " / ".join(f"{f['seconds']:.0f}" for f in fits) or "–",
            ]
        )
    return markdown_table(header, cells)


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["map"] != "fix-m0"]
    labels = [SHORT_TASKS[t] for t in TASK_NAMES] + ["all"]
    x = np.arange(len(labels))
    width = 0.8 / max(len(shown), 1)
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, r in enumerate(shown):
        values = [r["task_delta_pct"][t] for t in TASK_NAMES] + [r["unintended_delta_pct"]]
        ax.bar(x + (i - (len(shown) - 1) / 2) * width, values, width, label=r["map"])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels)
    ax.set_ylabel("version-0 consumers: AUC Δ% vs Fix-M0")
    ax.set_title(f"{title}: the No-BC model read through one map per target")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
