"""Validation Recall@50 of one freshly trained (BPR-only) version, evaluation by evaluation.

Why: to tell an under-trained model from one that cannot learn the data (a longer budget helps the
first, not the second) before blaming a compatibility method for a low intended metric. The data
sets are those of the compat benchmark (benchmarks/compat.py); nothing is cached or published.

    python benchmarks/learning_curve.py --data synthetic-large --version 0 --epochs 150
    python benchmarks/learning_curve.py --data synthetic-large --version 0 --layers 3 --epochs 60
    python benchmarks/learning_curve.py --data synthetic-large --version 0 --set learning_rate=4e-3

Run it alone (docs/DEVELOPING.md); prints one line per evaluation and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.compat import _value, data_sets  # noqa: E402
from training.config import profile  # noqa: E402
from training.data.config import default_movielens_dir, load_dataset  # noqa: E402
from training.data.splits import version_splits  # noqa: E402
from training.loop import IntendedTask, fit_model  # noqa: E402
from training.models.factory import ModelSpec, build_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="synthetic-large", help="ml-100k, synthetic or synthetic-large")
    p.add_argument("--ml-path", type=Path, default=default_movielens_dir())
    p.add_argument("--version", type=int, default=0)
    p.add_argument("--epochs", type=int, default=100, help="no patience: every epoch runs")
    p.add_argument("--layers", type=int, default=None, help="GNN layers (default: the version's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training-profile override")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    data, profile_name, overrides = data_sets(args.ml_path)[args.data]
    overrides = {**overrides, **dict(kv.split("=", 1) for kv in args.set)}
    overrides = {k: _value(v) if isinstance(v, str) else v for k, v in overrides.items()}
    schedule = {"epochs": args.epochs, "patience": None, "select_after_epoch": 0}  # every evaluation counts
    config = profile(profile_name, **{**overrides, **schedule})
    dataset = load_dataset(data)
    split = version_splits(dataset, config.time_slices)[args.version]
    task = IntendedTask.for_split(dataset, split, config, torch.device("cpu"))
    layers = config.layers[args.version] if args.layers is None else args.layers
    torch.manual_seed(args.seed)
    model = build_model(ModelSpec.for_dataset(config.model, config.dims[args.version], layers, dataset))
    print(f"{args.data} v{args.version}: {len(split.train_user):,} training interactions, {split.num_items:,} items")
    started, load = time.perf_counter(), os.getloadavg()[0]
    fit = fit_model(model, task, config, np.random.default_rng(args.seed), epochs=args.epochs, progress=True)
    k = config.selection_k
    for e in fit.history:
        print(f"epoch {e.epoch:4d}  loss {e.train_loss:.4f}  Recall@{k} {e.recall[k]:.4f}")
    summary = dict(
        data=args.data,
        version=args.version,
        layers=layers,
        overrides={k: v for k, v in overrides.items() if k not in ("time_slices", "dims", "layers")},
        curve=[(e.epoch, round(e.recall[k], 5)) for e in fit.history],
        seconds=round(time.perf_counter() - started, 1),
        loadavg=[load, os.getloadavg()[0]],
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
