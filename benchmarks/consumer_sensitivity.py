"""What a version-0 consumer is sensitive to: controlled errors added to the *true* version-0 vectors.

Why: before changing the alignment, find out which errors cost the consumers AUC. This trains the
Fix-M0 reference (M_0 re-run on every version's graph) and the consumers of the five unintended
tasks exactly as benchmarks/compat.py does, then feeds the consumers M_0's own vectors plus noise
of a given mean L2 norm and shape:

* ``iso``    -- isotropic Gaussian;
* ``top16``  -- only along the 16 leading principal directions of version 0's vectors
  (where >90% of their variance lies);
* ``rest``   -- only along the other directions;
* ``relvar`` -- each principal direction in proportion to its own standard deviation.

Users and items get the same absolute noise; their mean norms are printed for scale. Output: the
unintended Δ% vs Fix-M0 per task and on average, per noise shape and size.

    python benchmarks/consumer_sensitivity.py [--data-path ../shared/data/ml-100k] [--out docs/benchmarks/consumer_sensitivity.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.compat import CONSUMERS  # noqa: E402
from training.chain import VersionChain  # noqa: E402
from training.config import profile  # noqa: E402
from training.data import load_dataset, version_splits  # noqa: E402
from training.data.config import MovieLensData, default_movielens_dir  # noqa: E402
from training.experiments.consumers.protocol import train_task_consumers  # noqa: E402
from training.experiments.consumers.tasks import TASK_NAMES, TaskLabels  # noqa: E402
from training.strategies import make_strategy  # noqa: E402

SHAPES = ("iso", "top16", "rest", "relvar")
SIZES = (0.25, 0.5, 1.0, 2.0)


def principal_directions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(directions as rows, variance along each), largest first."""
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return vt, s**2 / len(x)


def noise(shape: str, size: float, n: int, basis: np.ndarray, variance: np.ndarray, rng) -> np.ndarray:
    coords = rng.standard_normal((n, basis.shape[0]))
    if shape == "top16":
        coords[:, 16:] = 0
    elif shape == "rest":
        coords[:, :16] = 0
    elif shape == "relvar":
        coords *= np.sqrt(variance / variance.mean())
    out = coords @ basis
    return out * (size / np.linalg.norm(out, axis=1).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-path", type=Path, default=default_movielens_dir())
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    started = time.perf_counter()
    dataset = load_dataset(MovieLensData(path=args.data_path))
    config = profile("fast")
    labels = TaskLabels(dataset, version_splits(dataset, config.time_slices))
    chain = VersionChain(make_strategy("fix-m0"), dataset, config)
    reference = {}
    for _ in range(config.num_versions):
        out = chain.train_next()
        reference[out.version] = (out.user_ver0, out.item_ver0)
    consumers = {t: train_task_consumers(t, labels, reference, CONSUMERS) for t in TASK_NAMES}
    bases = [principal_directions(x) for x in reference[0]]
    norms = {
        "user": float(np.linalg.norm(reference[0][0], axis=1).mean()),
        "item": float(np.linalg.norm(reference[0][1], axis=1).mean()),
    }
    print(
        f"mean norm of version-0 vectors: users {norms['user']:.2f}, items {norms['item']:.2f}; "
        f"top-16 variance share: users {bases[0][1][:16].sum() / bases[0][1].sum():.1%}, "
        f"items {bases[1][1][:16].sum() / bases[1][1].sum():.1%}"
    )
    base_auc = {t: c.evaluate_chain(reference) for t, c in consumers.items()}
    rng = np.random.default_rng(0)
    rows = []
    print(f"| noise | L2 | mean Δ% | {' | '.join(TASK_NAMES)} |\n|" + "---|" * (3 + len(TASK_NAMES)))
    for shape in SHAPES:
        for size in SIZES:
            noisy = {
                v: tuple(
                    (x + noise(shape, size, len(x), *basis, rng)).astype(np.float32)
                    for x, basis in zip(pair, bases, strict=True)
                )
                for v, pair in reference.items()
            }
            deltas = {}
            for t, c in consumers.items():
                got = c.evaluate_chain(noisy)
                deltas[t] = float(
                    np.mean([(np.mean(got[v]) - np.mean(base_auc[t][v])) / np.mean(base_auc[t][v]) * 100 for v in got])
                )
            mean = float(np.mean(list(deltas.values())))
            rows.append({"shape": shape, "l2": size, "mean_delta_pct": mean, "tasks": deltas})
            print(
                f"| {shape} | {size} | {mean:+.2f} | " + " | ".join(f"{deltas[t]:+.2f}" for t in TASK_NAMES) + " |",
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"norms": norms, "rows": rows, "seconds": time.perf_counter() - started}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
