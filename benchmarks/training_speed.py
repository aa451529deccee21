"""Training speed on MovieLens 100K: wall time of each version of a strategy's chain.

The requirement it checks: one BC-Aligner version update (version k >= 1) with the ``default``
profile takes at most 5 minutes on 2 CPU cores. It trains versions 0..N-1 exactly as
``python -m training train`` does (a work directory, checkpoints, no publishing unless --repo),
and reports per version: wall and CPU seconds, optimizer steps, selected epoch, validation
Recall@50 and alignment error to version 0. The machine's load average is recorded before and
after each version, because other processes on a 2-core machine inflate wall times.

    python benchmarks/training_speed.py                                  # bc-aligner, default profile
    python benchmarks/training_speed.py --profile fast --strategy nobc --out fast-nobc.json
    python benchmarks/training_speed.py --profile fast --strategy all      # 8 chains, one model cache
    python benchmarks/training_speed.py --step-times                     # ms per optimizer step only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.cache import ModelCache  # noqa: E402
from training.config import PROFILE_NAMES, profile  # noqa: E402
from training.data import MovieLensData, default_movielens_dir, load_dataset, version_splits  # noqa: E402
from training.experiments.report import processor_name  # noqa: E402
from training.strategies import STRATEGY_NAMES, make_strategy  # noqa: E402
from training.workdir import TrainingRun  # noqa: E402

UPDATE_BUDGET_SECONDS = 300.0


def loadavg() -> float:
    return os.getloadavg()[0]


def strategies(text: str) -> list[str]:
    names = list(STRATEGY_NAMES) if text == "all" else [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in STRATEGY_NAMES]
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; choose from {', '.join(STRATEGY_NAMES)} or 'all'")
    return names


def chain_timings(args, strategy: str, cache: ModelCache | None) -> list[dict]:
    config = profile(args.profile)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="training-speed-")) / strategy
    run = TrainingRun.create(
        workdir, strategy=make_strategy(strategy), config=config, data=MovieLensData(path=args.data_dir), seed=args.seed
    )
    rows = []
    for k in range(min(args.versions, config.num_versions)):
        load_before, wall, cpu = loadavg(), time.perf_counter(), time.process_time()
        out = run.train_next_version(progress=args.progress, cache=cache)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        published = None
        if args.repo:
            from training.publish import publish_output

            t = time.perf_counter()
            publish_output(out, args.repo, project=args.project)
            published = time.perf_counter() - t
        epochs = out.epochs_run
        steps = epochs * math.ceil(out.split.num_train / config.batch_size)
        row = {
            "strategy": strategy,
            "version": k,
            "dim": out.dim,
            "layers": out.spec.num_layers,
            "train_interactions": out.split.num_train,
            "epochs": epochs,
            "steps": steps,
            "selected_epoch": out.selected_epoch,
            "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1),
            "publish_seconds": None if published is None else round(published, 1),
            "from_cache": out.from_cache,
            "val_recall@50": round(out.val_recall[50], 4),
            "align_error_v0": round(out.alignment_error[0]["all"], 4) if k else None,
            # scale of the ver-0 space, to read the alignment error against
            "ver0_mean_norm": round(
                float(np.linalg.norm(np.concatenate([out.user_ver0, out.item_ver0]), axis=1).mean()), 3
            ),
            "loadavg_before": round(load_before, 2),
            "loadavg_after": round(loadavg(), 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def step_times(args) -> list[dict]:
    """ms per optimizer step (full propagation + backward + Adam) with the profile's negatives:
    BPR as the loop computes it (negatives as indices, :func:`training.objectives.bpr_loss_gathered`),
    BPR on materialized (B, N, D) negatives (the loop's path before it, for the A/B), and the loop's
    BPR with BC-Aligner's term. The three modes alternate step by step, so load hits them alike."""
    from training.alignment import JointAlignment
    from training.loop import IntendedTask
    from training.models import ModelSpec, build_model
    from training.objectives import bpr_loss, bpr_loss_gathered

    config = profile(args.profile)
    dataset = load_dataset(MovieLensData(path=args.data_dir))
    rows = []
    for k, split in enumerate(version_splits(dataset, config.time_slices)):
        task = IntendedTask.for_split(dataset, split, config, torch.device("cpu"))
        model = build_model(ModelSpec.for_dataset(config.model, config.dims[k], config.layers[k], dataset))
        sample = task.sampler(np.random.default_rng(0)).sample_epoch(config.negatives)
        u, p, n = (t[: config.batch_size] for t in sample)
        with torch.no_grad():
            tu, ti = model(task.graph)
        old = config.dims[max(k - 1, 0)]
        older = [np.eye(config.dims[j - 1], config.dims[j], dtype=np.float32) for j in range(1, k)]
        alignment = JointAlignment(
            kind="learned",
            new_dim=config.dims[k],
            target_user=tu[:, :old].contiguous(),
            target_item=ti[:, :old].contiguous(),
            lam=16.0,
            older_transforms=older,
            multi_step=True,
        )
        optimizer = torch.optim.Adam([*model.parameters(), *alignment.parameters()], lr=1e-3)
        row = {
            "version": k,
            "dim": config.dims[k],
            "layers": config.layers[k],
            "batch": config.batch_size,
            "negatives": config.negatives,
        }
        modes = ("bpr", "bpr_materialized", "bc-aligner")
        timings: dict[str, list[float]] = {mode: [] for mode in modes}
        for step in range(args.steps + 2):
            for mode in modes:
                t = time.perf_counter()
                zu, zi = model(task.graph)
                zu_b, zp_b = zu.index_select(0, u), zi.index_select(0, p)
                if mode == "bpr_materialized":
                    zn = zi.index_select(0, n.reshape(-1)).view(*n.shape, -1)
                    loss = bpr_loss(zu_b, zp_b, zn, config.l2_weight)
                else:
                    loss = bpr_loss_gathered(zu_b, zp_b, zi, n, config.l2_weight)
                if mode == "bc-aligner":
                    loss = loss + alignment.loss(zu, zi, u, p, n if n.ndim == 1 else n[:, 0])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if step >= 2:  # warm-up steps excluded
                    timings[mode].append(time.perf_counter() - t)
        for mode in modes:
            row[f"{mode}_ms_per_step"] = round(1000 * float(np.median(timings[mode])), 1)
        row["materialized_over_loop"] = round(row["bpr_materialized_ms_per_step"] / row["bpr_ms_per_step"], 2)
        row["loadavg"] = round(loadavg(), 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(default_movielens_dir()), help="MovieLens 100K directory ($ML100K_DIR)")
    p.add_argument("--strategy", default="bc-aligner", help="a strategy, a comma-separated list, or 'all'")
    p.add_argument("--profile", default="default", choices=PROFILE_NAMES)
    p.add_argument("--versions", type=int, default=5, help="train versions 0..N-1")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workdir", help="default: a fresh temporary directory")
    p.add_argument(
        "--model-cache",
        help="share BPR-only models (version 0, No-BC) between runs (default: a fresh "
        "temporary cache shared by the strategies of this run)",
    )
    p.add_argument("--repo", help="also publish each version into this feature repo (timed separately)")
    p.add_argument("--project", default="training_speed")
    p.add_argument("--step-times", action="store_true", help="only measure ms per optimizer step per version")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()

    header = {
        "benchmark": "step_times" if args.step_times else "chain",
        "strategy": args.strategy,
        "profile": args.profile,
        "config": profile(args.profile).model_dump(mode="json"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "processor": processor_name(),
        "python": platform.python_version(),
    }
    if args.step_times:
        rows = step_times(args)
    else:
        cache = ModelCache(args.model_cache or tempfile.mkdtemp(prefix="training-speed-cache-"))
        rows = [row for name in strategies(args.strategy) for row in chain_timings(args, name, cache)]
    result = {**header, "rows": rows}
    if not args.step_times:
        updates = [r["wall_seconds"] for r in rows if r["version"] > 0]
        if updates:
            result["max_update_seconds"] = max(updates)
            result["update_within_budget"] = max(updates) <= UPDATE_BUDGET_SECONDS
            print(
                f"slowest update: {max(updates):.1f}s (budget {UPDATE_BUDGET_SECONDS:.0f}s) -> "
                f"{'OK' if result['update_within_budget'] else 'OVER BUDGET'}"
            )
        result["total_seconds"] = round(sum(r["wall_seconds"] for r in rows), 1)
        print(f"total: {result['total_seconds']:.1f}s for {len(rows)} versions")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
