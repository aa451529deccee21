"""Recall of new-model queries mapped into an old version's index (feast_bc.query_mapping, issue 26).

Setting of ``examples/own_model.py`` (a product encoder; versions 0, 1, 2 at dims 16, 24, 32 trained
with ``BackwardCompatibility`` at ``--lams``; 3 seeds by default). A retriever built an index of the
version-0 vectors of all 6,000 products when version 0 was published and never re-indexed. After
version 2 ships, each of 1,000 held-out query products is embedded by model 2 and searched in that
index in three ways, top-10 by cosine similarity:

* ``true``   -- with its version-0 vector (model 0): the ground truth;
* ``mapped`` -- with B_1∘B_2(z_2) (:class:`feast_bc.query_mapping.QueryMapper`, the pin's matrix):
  recall@10 against ``true``;
* ``mapped, catalog corpus`` -- the same query searched in the corpus as the v0 pin serves it now
  (B_1∘B_2 of every product's z_2: a re-materialized index instead of the stale one).

λ = 0 is the control (B's fitted jointly, nothing holding the new model near version 0).

    python benchmarks/query_mapping.py --lams 0 1 16 --seeds 0 1 2
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
from own_model import FAMILY, make_products  # noqa: E402
from own_model_versions import SIZES, embed, fit_version, publish  # noqa: E402

from feast_bc import Catalog  # noqa: E402
from feast_bc.query_mapping import QueryMapper  # noqa: E402

QUERIES, K = np.arange(5000, 6000), 10


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int = K) -> np.ndarray:
    """Indices of the k most cosine-similar corpus rows per query (the query itself excluded)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    c = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    scores = q @ c.T
    scores[np.arange(len(q)), QUERIES] = -np.inf  # a query product is in the corpus: not its own neighbour
    return np.argpartition(-scores, k, axis=1)[:, :k]


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(got, truth, strict=True)]))


def run(lam: float, seed: int, epochs: int, features, category) -> dict:
    everyone = np.arange(len(features), dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Catalog(Path(tmp) / "bc_catalog")
        models = []
        for k in range(len(SIZES)):
            model, bc, _ = fit_version(catalog, features, category, k, lam=lam, seed=seed, epochs=epochs)
            z_all = embed(model, features, everyone)
            publish(catalog, bc, everyone, z_all)
            models.append(z_all)
        index_v0 = models[0]  # the stale index: version-0 vectors as they were at version 0
        mapper = QueryMapper(catalog, FAMILY, target=0)
        mapped = mapper.map(models[2][QUERIES])
        truth = top_k(index_v0[QUERIES], index_v0)
        served_v0 = catalog.transform_vectors(FAMILY, models[2], 2, 0)
        return {
            "lam": lam,
            "seed": seed,
            "recall_mapped_stale_index": recall(top_k(mapped, index_v0), truth),
            "recall_mapped_catalog_index": recall(top_k(mapped, served_v0), truth),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lams", type=float, nargs="+", default=[0, 1, 16])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "query_mapping.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    features, category, _ = make_products(6000)
    rows = []
    for lam in args.lams:
        for seed in args.seeds:
            rows.append(run(lam, seed, args.epochs, features, category))
            print(rows[-1], flush=True)
    mean = {
        f"{lam:g}": {
            m: float(np.mean([r[m] for r in rows if r["lam"] == lam]))
            for m in ("recall_mapped_stale_index", "recall_mapped_catalog_index")
        }
        for lam in args.lams
    }
    write_json(
        Path(args.out),
        {"benchmark": "query_mapping", "args": vars(args), "load_avg": os.getloadavg(), "rows": rows, "mean": mean},
    )
    _plot(mean, Path(args.out).with_suffix(".png"))
    for lam, m in mean.items():
        print(
            f"λ={lam}: recall@10 mapped vs true v0 query -- stale index {m['recall_mapped_stale_index']:.3f}, "
            f"catalog index {m['recall_mapped_catalog_index']:.3f}"
        )


def _plot(mean: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lams = list(mean)
    x = np.arange(len(lams))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(x - 0.2, [mean[lam]["recall_mapped_stale_index"] for lam in lams], 0.4, label="stale v0 index")
    ax.bar(x + 0.2, [mean[lam]["recall_mapped_catalog_index"] for lam in lams], 0.4, label="v0 pin's values now")
    ax.set_xticks(x, [f"λ={lam}" for lam in lams])
    ax.set_ylabel("recall@10 vs the true v0 query")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
