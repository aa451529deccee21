"""Your own PyTorch model, made backward compatible: three versions, served by Feast, one consumer.

The embedding team here owns a product encoder (an MLP over 48 raw product features, trained to
predict the product's category) -- not the built-in recommender. Each version is bigger (dims 16,
24, 32), sees more products and trains longer. BC-Aligner is added to its loop with
``training.BackwardCompatibility`` (the five lines marked ``# BC``); each version is published
through the catalog, ``feast apply`` + ``feast materialize`` write every older version through the
learned transforms, and a consumer team's classifier, trained once on version 0 as Feast served
it, is scored on what Feast serves its version-0 pin after every update.

Run:  python examples/own_model.py            (under 2 minutes on 2 CPU cores: 89 s of CPU; no download)
It prints the figures it checks and exits 1 when the consumer loses more than --max-drop accuracy,
when the encoder's own accuracy gets worse, or when Feast's values differ from the numpy chain.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch
from torch import nn

from feast_bc import Catalog, EntitySpec
from feast_bc.repo import apply, init_repo
from training import BackwardCompatibility

FAMILY = "product_embedding"
ENTITY = EntitySpec(name="product", join_key="product_id", dtype="int64")
MARKER = ".own_model_example"


# ----------------------------------------------------------------------------- the team's data and model
def make_products(n: int, seed: int = 0):
    """Raw features (48), a category (12 classes, the team's task) and a consumer's label (a different,
    binary property of the same products) from 8 hidden factors."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 8))
    features = np.tanh(factors @ rng.normal(size=(8, 48))) + 0.3 * rng.normal(size=(n, 48))
    category = (factors @ rng.normal(size=(8, 12))).argmax(axis=1)
    consumer_label = (factors @ rng.normal(size=8) > 0).astype(np.float32)
    return features.astype(np.float32), category, consumer_label


class ProductEncoder(nn.Module):
    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(48, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.head = nn.Linear(dim, 12)

    def forward(self, x):
        z = self.encode(x)
        return z, self.head(z)


def train_version(x, y, ids, dim: int, epochs: int, bc: BackwardCompatibility | None, seed: int):
    """The team's own loop; the lines marked # BC are all that BC-Aligner adds."""
    torch.manual_seed(seed)
    model = ProductEncoder(dim)
    params = list(model.parameters()) + (list(bc.parameters()) if bc is not None else [])  # BC: B_k trains too
    optimizer = torch.optim.Adam(params, lr=3e-3)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(256):
            z, logits = model(x_t[batch])
            loss = nn.functional.cross_entropy(logits, y_t[batch])
            if bc is not None:
                loss = loss + bc.loss(ids[batch.numpy()], z)  # BC: alignment, matched by product id
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return model, model(x_t)[0].numpy()


def category_accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x))[1].argmax(1).numpy() == y).mean())


# ----------------------------------------------------------------------------- the consumer team
def fit_logistic(z, label, epochs: int = 300):
    torch.manual_seed(0)
    clf = nn.Linear(z.shape[1], 1)
    optimizer = torch.optim.Adam(clf.parameters(), lr=0.05)
    z_t, y_t = torch.from_numpy(z), torch.from_numpy(label)
    for _ in range(epochs):
        loss = nn.functional.binary_cross_entropy_with_logits(clf(z_t).squeeze(1), y_t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return clf


def consumer_accuracy(clf, z, label) -> float:
    with torch.no_grad():
        return float(((clf(torch.from_numpy(z)).squeeze(1) > 0).numpy() == (label > 0.5)).mean())


def read_v0_through_feast(repo: Path, ids: np.ndarray) -> np.ndarray:
    """What the consumer does: ``get_online_features`` on the pinned version-0 FeatureService."""
    from feast import FeatureStore  # noqa: PLC0415 - Feast costs seconds to import; only the consumer needs it

    store = FeatureStore(repo_path=str(repo))
    rows = [{"product_id": int(i)} for i in ids]
    values = store.get_online_features(features=store.get_feature_service(f"{FAMILY}_v0"), entity_rows=rows)
    return np.asarray(values.to_dict()["embedding"], dtype=np.float32)


def materialize(repo: Path) -> None:
    """``feast materialize`` from Python: every version's view, through feast_bc's engine."""
    from feast import FeatureStore  # noqa: PLC0415

    FeatureStore(repo_path=str(repo)).materialize(
        datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5)
    )


# ----------------------------------------------------------------------------- the lifecycle
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("own_model_work"))
    p.add_argument("--epochs", type=int, default=12, help="epochs of version 0 (later versions train longer)")
    p.add_argument("--max-drop", type=float, default=0.02, help="largest consumer accuracy loss accepted")
    args = p.parse_args(argv)
    started = time.perf_counter()
    workdir = args.workdir.absolute()
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / MARKER).exists():
        print(f"{workdir} is not empty and was not made by this example; pass another --workdir", file=sys.stderr)
        return 2
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / MARKER).touch()
    repo = init_repo(workdir / "feature_repo", project="own_model_example")
    catalog = Catalog.for_repo(repo)

    features, category, consumer_label = make_products(6000)
    test = np.arange(5000, 6000)  # never trained on by anyone
    sizes, dims = [3000, 4000, 5000], [16, 24, 32]
    clf, baseline, failures = None, None, []
    previous_accuracy = 0.0
    for k, (n, dim) in enumerate(zip(sizes, dims, strict=True)):
        ids = np.arange(n, dtype=np.int64)
        bc = None if k == 0 else BackwardCompatibility.from_catalog(catalog, FAMILY, new_dim=dim, lam=4.0)  # BC
        model, z = train_version(features[:n], category[:n], ids, dim, args.epochs * (k + 1), bc, seed=k)
        served_ids = np.concatenate([ids, test])
        with torch.no_grad():
            z_all = model(torch.from_numpy(features[served_ids]))[0].numpy()
        if bc is None:
            catalog.publish(FAMILY, ids=served_ids, vectors=z_all, entity=ENTITY)
        else:
            bc.publish(catalog, {FAMILY: (served_ids, z_all)})  # BC: z_k and B_k through the catalog
        apply(repo)
        materialize(repo)
        v0 = read_v0_through_feast(repo, served_ids)
        offline = catalog.transform_vectors(FAMILY, z_all, k, 0)
        feast_diff = float(np.abs(v0 - offline).max())
        if clf is None:  # the consumer trains once, on version 0 as Feast served it
            clf = fit_logistic(v0[: sizes[0]], consumer_label[: sizes[0]])
        accuracy = consumer_accuracy(clf, v0[-len(test) :], consumer_label[test])
        baseline = accuracy if baseline is None else baseline
        own = category_accuracy(model, features[test], category[test])
        print(
            f"version {k}: dim {dim}, {n} products; encoder accuracy {own:.3f}; v0 consumer accuracy {accuracy:.3f} "
            f"(version 0: {baseline:.3f}); Feast vs numpy chain max |diff| {feast_diff:.1e}",
            flush=True,
        )
        if feast_diff > 1e-5:
            failures.append(f"version {k}: Feast's v0 values differ from the numpy chain by {feast_diff:.1e}")
        if baseline - accuracy > args.max_drop:
            failures.append(f"version {k}: the v0 consumer lost {baseline - accuracy:.3f} accuracy (> {args.max_drop})")
        if own < previous_accuracy - 0.01:
            failures.append(f"version {k}: the encoder's own accuracy fell from {previous_accuracy:.3f} to {own:.3f}")
        previous_accuracy = own
    print(f"done in {time.perf_counter() - started:.0f}s; repo {repo}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
