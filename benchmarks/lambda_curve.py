"""How to choose λ for ``training.BackwardCompatibility``: the intended task vs. what consumers keep.

The setting of ``examples/own_model.py`` -- a team's own product encoder (MLP over 48 features,
trained on 12 categories), three versions (dims 16, 24, 32; 3,000 / 4,000 / 5,000 products; 12 / 24 /
36 epochs), and a consumer's logistic classifier of another product property, trained once on
version 0 -- run for each λ in ``--lams`` (the loss is ``task + λ·L_align``; λ = 0 trains B_k but
nothing holds the new model near the old space). Per λ and seed, measured on the 1,000 held-out
products:

* ``encoder``  -- the new version's own category accuracy (the intended task);
* ``consumer`` -- the version-0 consumer's accuracy on what its pin serves after the update
  (B_1∘…∘B_k(z_k), computed through the catalog exactly as Feast serves it), and its loss vs. v0;
* ``drift``    -- the v0 pin's drift since publish (mean ‖now − then‖ / mean ‖then‖).

Version 0 is trained once per seed and shared by every λ; nothing else is shared. Feast is not
started: ``Catalog.transform_vectors`` is what materialization writes (tests/test_backward_compat.py
checks that against Feast).

    python benchmarks/lambda_curve.py --lams 0 0.25 1 4 16 64 256 --seeds 0 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "examples")]

from common import write_json  # noqa: E402
from own_model import ENTITY, FAMILY, category_accuracy, consumer_accuracy, fit_logistic, make_products  # noqa: E402
from own_model_versions import SIZES, embed, fit_version, publish  # noqa: E402

from feast_bc import Catalog  # noqa: E402

TEST = np.arange(5000, 6000)


def run(lam: float, seed: int, epochs: int, v0, data) -> list[dict]:
    """Versions 1 and 2 at ``lam`` on top of the shared version 0; one row per version."""
    features, category, label = data
    z0_all, clf, served_ids, baseline = v0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Catalog(Path(tmp) / "bc_catalog")
        catalog.publish(FAMILY, ids=served_ids, vectors=z0_all, entity=ENTITY)
        for k in (1, 2):
            model, bc, seconds = fit_version(catalog, features, category, k, lam=lam, seed=seed, epochs=epochs)
            served = np.concatenate([np.arange(SIZES[k], dtype=np.int64), TEST])
            z_all = embed(model, features, served)
            publish(catalog, bc, served, z_all)
            v0_now = catalog.transform_vectors(FAMILY, z_all, k, 0)
            then = z0_all[-len(TEST) :]
            now = v0_now[-len(TEST) :]
            accuracy = consumer_accuracy(clf, now, label[TEST])
            rows.append(
                {
                    "lam": lam,
                    "seed": seed,
                    "version": k,
                    "encoder": category_accuracy(model, features[TEST], category[TEST]),
                    "consumer": accuracy,
                    "consumer_loss": baseline - accuracy,
                    "drift": float(np.linalg.norm(now - then, axis=1).sum() / np.linalg.norm(then, axis=1).sum()),
                    "train_s": seconds,
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lams", type=float, nargs="+", default=[0, 0.25, 1, 4, 16, 64, 256])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "lambda_curve.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = make_products(6000)
    features, category, label = data
    rows, v0_rows = [], []
    for seed in args.seeds:
        model0, _, _ = fit_version(None, features, category, 0, lam=0.0, seed=seed, epochs=args.epochs)
        served0 = np.concatenate([np.arange(SIZES[0], dtype=np.int64), TEST])
        z0_all = embed(model0, features, served0)
        clf = fit_logistic(z0_all[: SIZES[0]], label[: SIZES[0]])
        baseline = consumer_accuracy(clf, z0_all[-len(TEST) :], label[TEST])
        v0_rows.append(
            {"seed": seed, "encoder": category_accuracy(model0, features[TEST], category[TEST]), "consumer": baseline}
        )
        for lam in args.lams:
            rows += run(lam, seed, args.epochs, (z0_all, clf, served0, baseline), data)
            last = rows[-1]
            print(
                f"seed {seed} λ={lam:g}: v2 encoder {last['encoder']:.3f}, v0 consumer {last['consumer']:.3f} "
                f"(v0 {baseline:.3f}), v0 drift {last['drift']:.3f}",
                flush=True,
            )
    summary = {}
    for lam in args.lams:
        for k in (1, 2):
            sel = [r for r in rows if r["lam"] == lam and r["version"] == k]
            summary[f"{lam:g}/v{k}"] = {
                m: float(np.mean([r[m] for r in sel])) for m in ("encoder", "consumer_loss", "drift")
            }
    result = {
        "benchmark": "lambda_curve",
        "args": vars(args),
        "load_avg": os.getloadavg(),
        "version0": v0_rows,
        "rows": rows,
        "mean": summary,
    }
    write_json(Path(args.out), result)
    _plot(result, Path(args.out).with_suffix(".png"))


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lams = result["args"]["lams"]
    xs = [max(lam, 0.05) for lam in lams]  # λ = 0 drawn at the left edge of the log axis
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for k, style in ((1, "o-"), (2, "s--")):
        for ax, metric, title in zip(
            axes,
            ("encoder", "consumer_loss", "drift"),
            ("new version's own accuracy", "v0 consumer's accuracy loss", "v0 pin's drift since publish"),
            strict=True,
        ):
            ax.plot(xs, [result["mean"][f"{lam:g}/v{k}"][metric] for lam in lams], style, label=f"after v{k}")
            ax.set_xscale("log")
            ax.set_xlabel("λ (0 at the left edge)")
            ax.set_title(title)
    axes[0].axhline(np.mean([r["encoder"] for r in result["version0"]]), color="grey", lw=0.8, label="v0")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
