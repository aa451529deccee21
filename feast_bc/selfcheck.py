"""`feast-bc selfcheck`: run the whole serving lifecycle on generated embeddings and check it.

Why: an operator setting up a new online store (SQLite, or Redis with its connection string) wants
one command that proves publish -> `feast apply` -> `feast materialize` -> pinned reads give the
right numbers there, without training anything. The embeddings are synthetic but structured: every
version is a different random linear view (of a growing dimension) of the same latent factors plus
noise, and each B_v is fitted by least squares (:meth:`LinearTransform.fit`), so a version-0 pin
served from version k is close to the true version-0 vectors -- the alignment error printed per
version shows how close.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from tqdm import tqdm

from feast_bc.catalog import Catalog
from feast_bc.export import export_version
from feast_bc.manifest import EntitySpec
from feast_bc.naming import EMBEDDING_FEATURE, service_name
from feast_bc.registries import DEFAULT_PROFILE_FILENAME
from feast_bc.repo import apply, init_repo
from feast_bc.transforms import LinearTransform

MARKER = ".feast_bc_selfcheck"
FAMILIES = {
    "user_embedding": EntitySpec(name="user", join_key="user_id"),
    "item_embedding": EntitySpec(name="item", join_key="item_id"),
}


class VersionCheck(BaseModel):
    version: int
    dims: dict[str, int]
    publish_s: float
    apply_s: float
    materialize_s: float
    max_abs_online_vs_offline: float = Field(description="over every pinned version and entity")
    v0_alignment_error: dict[str, float] = Field(
        description="mean L2 distance of the served v0 pin to the true v0 vectors"
    )
    pinned_reads: int


class SelfCheckReport(BaseModel):
    online_store: str
    repo: str
    entities: dict[str, int]
    versions: list[VersionCheck]
    ok: bool


def _latent_views(rng: np.random.Generator, n: int, dims: list[int], latent: int = 16, noise: float = 0.05):
    base = rng.normal(size=(n, latent))
    return [
        (base @ rng.normal(size=(latent, d)) / np.sqrt(latent) + noise * rng.normal(size=(n, d))).astype(np.float32)
        for d in dims
    ]


def run_selfcheck(
    workdir: str | Path,
    *,
    online_store: str = "sqlite",
    redis_url: str | None = None,
    entities: int = 2000,
    versions: int = 4,
    base_dim: int = 32,
    seed: int = 0,
) -> SelfCheckReport:
    workdir = Path(workdir).absolute()
    repo_dir = workdir / "feature_repo"
    if repo_dir.exists():
        if not (workdir / MARKER).exists():
            raise FileExistsError(f"{repo_dir} exists and was not created by selfcheck; choose another --workdir")
        shutil.rmtree(repo_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).touch()
    project = f"feast_bc_selfcheck_{seed}"
    repo = init_repo(repo_dir, project=project, online_store=online_store, redis_url=redis_url)
    catalog = Catalog.for_repo(repo)
    rng = np.random.default_rng(seed)
    dims = [base_dim + 16 * v for v in range(versions)]
    sizes = {"user_embedding": entities, "item_embedding": entities // 2}
    truth = {fam: _latent_views(rng, n + 10 * versions, dims) for fam, n in sizes.items()}
    checks: list[VersionCheck] = []
    store = None
    for v in tqdm(range(versions), desc="versions", unit="version"):
        t0 = time.perf_counter()
        for fam, spec in FAMILIES.items():
            n = sizes[fam] + 10 * v  # a few new entities arrive with every version
            z = truth[fam][v][:n]
            b = None if v == 0 else LinearTransform.fit(z, truth[fam][v - 1][:n])
            catalog.publish(
                fam, ids=np.arange(n) + 1, vectors=z, transform=b, entity=spec, metrics={"entities": float(n)}
            )
        t1 = time.perf_counter()
        store = apply(repo, fs_yaml_file=repo / DEFAULT_PROFILE_FILENAME)
        t2 = time.perf_counter()
        store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=1))
        t3 = time.perf_counter()
        worst, reads, align = 0.0, 0, {}
        for fam, spec in FAMILIES.items():
            n = sizes[fam] + 10 * v
            sample = np.linspace(1, n, num=min(n, 200), dtype=np.int64)
            for j in range(v + 1):
                resp = store.get_online_features(
                    features=store.get_feature_service(service_name(fam, j)),
                    entity_rows=[{spec.join_key: int(i)} for i in sample],
                ).to_dict()
                online = np.asarray(resp[EMBEDDING_FEATURE], dtype=np.float32)
                offline = np.asarray(
                    export_version(catalog, fam, j, ids=sample).column(EMBEDDING_FEATURE).to_pylist(), dtype=np.float32
                )
                worst = max(worst, float(np.abs(online - offline).max()))
                reads += len(sample)
                if j == 0:
                    align[fam] = float(np.linalg.norm(online - truth[fam][0][sample - 1], axis=1).mean())
        checks.append(
            VersionCheck(
                version=v,
                dims={fam: dims[v] for fam in FAMILIES},
                publish_s=round(t1 - t0, 3),
                apply_s=round(t2 - t1, 3),
                materialize_s=round(t3 - t2, 3),
                max_abs_online_vs_offline=worst,
                v0_alignment_error=align,
                pinned_reads=reads,
            )
        )
    report = SelfCheckReport(
        online_store=online_store,
        repo=str(repo),
        entities=sizes,
        versions=checks,
        ok=all(c.max_abs_online_vs_offline <= 1e-5 for c in checks),
    )
    (workdir / "report.json").write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n")
    return report


def render(report: SelfCheckReport) -> str:
    lines = [
        f"online store {report.online_store}, repo {report.repo}",
        f"{'ver':>3} {'dim':>4} {'publish s':>9} {'apply s':>8} {'mat. s':>7} {'reads':>6} {'max|online-offline|':>20} {'v0 align err (user/item)':>26}",
    ]
    for c in report.versions:
        dim = next(iter(c.dims.values()))
        al = "/".join(f"{c.v0_alignment_error[f]:.3f}" for f in FAMILIES)
        lines.append(
            f"{c.version:>3} {dim:>4} {c.publish_s:>9.2f} {c.apply_s:>8.2f} {c.materialize_s:>7.2f} {c.pinned_reads:>6} "
            f"{c.max_abs_online_vs_offline:>20.2e} {al:>26}"
        )
    lines.append("OK: every pinned version served by Feast equals the offline B-chain" if report.ok else "NOT OK")
    return "\n".join(lines)
