"""Publishing a trained version into a feast_bc feature repo, then applying it to Feast.

Two families, as the paper's B_k is shared by users and items: ``user_embedding`` (entity
``user``, join key ``user_id``) and ``item_embedding`` (entity ``item``, join key ``item_id``),
both receiving the same B_k. The ids are the dataset's own (int64 or string). After the publish
the repo is applied (``feast_bc.repo.apply``), so ``feast materialize`` then serves every pinned
version ``<family>_v<j>``.

Publishing is idempotent per family: a retry after a failure skips a family whose latest version
already holds exactly these vectors, so users and items end at the same version.
Feast is imported only here, and only when applying.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from feast_bc import Catalog, EntitySpec
from feast_bc.catalog import PublishRequest
from training.chain import VersionOutput
from training.errors import StateError

USER_FAMILY = "user_embedding"
ITEM_FAMILY = "item_embedding"
FAMILIES = (USER_FAMILY, ITEM_FAMILY)


@dataclass(frozen=True)
class PublishResult:
    repo: Path
    version: int
    published: list[str]  # families written by this call
    skipped: list[str]  # families that already held this version (a retried publish)
    applied: bool


def ensure_repo(repo: str | Path, project: str | None = None) -> Path:
    """The feature repo, created (``feast_bc.repo.init_repo``) when it has no feature_store.yaml."""
    from feast_bc.repo import init_repo

    path = Path(repo).absolute()
    if not (path / "feature_store.yaml").is_file():
        init_repo(path, project=project or "feast_bc")
    return path


def publish_output(
    output: VersionOutput,
    repo: str | Path,
    *,
    project: str | None = None,
    apply: bool = True,
    description: str | None = None,
    force: bool = False,
) -> PublishResult:
    """Publish ``output`` into both families, then apply the repo.

    The publish gate is checked for both families before either is written
    (:func:`publish_together`); ``force`` publishes past it (recorded in each manifest).
    """
    path = ensure_repo(repo, project)
    catalog = Catalog.for_repo(path)
    k = output.version
    text = description or _description(output)
    entries = (
        (
            USER_FAMILY,
            EntitySpec(name="user", join_key="user_id", dtype=_dtype(output.user_ids)),
            output.user_ids,
            output.user_embeddings,
            output.metrics("user"),
        ),
        (
            ITEM_FAMILY,
            EntitySpec(name="item", join_key="item_id", dtype=_dtype(output.item_ids)),
            output.item_ids,
            output.item_embeddings,
            output.metrics("item"),
        ),
    )
    transform = output.transform if k > 0 else None
    todo = [e for e in entries if not _already_published(catalog, e[0], k, e[2], e[3])]
    published = publish_together(catalog, k, todo, transform, description=text, force=force)
    skipped = [e[0] for e in entries if e[0] not in published]
    if apply:
        from feast_bc.repo import apply as apply_repo

        apply_repo(path)
    return PublishResult(path, k, published, skipped, apply)


def publish_together(
    catalog: Catalog, version: int, entries, transform, *, description: str = "", force: bool = False
) -> list[str]:
    """Publish ``version`` of several families sharing one B_k, all or none as far as the gate goes.

    ``entries`` are (family, entity or None, ids, vectors, metrics). The publish gate
    (``bc_catalog/publish_gate.json``, :mod:`feast_bc.publish_gate`) is checked for *every* family
    before any is written: a version refused for items leaves the users family unchanged too.
    ``force`` publishes past the gate (recorded in each manifest). Returns the families written.
    """
    # One publish path (feast_bc's Publisher): every family validated and judged by the gate once,
    # under all the families' locks, before any is written -- with force too: a forced publish
    # skips the gate's limits, never the validation (a NaN in the second family must not leave the
    # first published).
    requests = [
        PublishRequest(family, ids, vectors, transform, entity, metrics, version, description)
        for family, entity, ids, vectors, metrics in entries
    ]
    catalog.publish_all(requests, force=force)
    return [request.family for request in requests]


def _dtype(ids: np.ndarray) -> Literal["int64", "string"]:
    return "int64" if ids.dtype.kind == "i" else "string"


def _description(output: VersionOutput) -> str:
    s = output.split
    b = "" if output.transform_kind is None else f"; B_{output.version} is {output.transform_kind}"
    return (
        f"{output.strategy} version {output.version}: trained on interactions up to fraction {s.time_train:g} "
        f"(+ new users' earlier interactions), validated on ({s.time_train:g}, {s.time_next:g}]{b}"
    )


def _already_published(catalog: Catalog, family: str, version: int, ids: np.ndarray, vectors: np.ndarray) -> bool:
    if not catalog.has_family(family):
        return False
    manifest = catalog.manifest(family)
    if manifest.latest_version < version:
        return False
    if manifest.latest_version > version:
        raise StateError(
            f"family {family!r} in {catalog.root} is already at version {manifest.latest_version}; "
            f"cannot publish version {version} again"
        )
    stored_ids, stored = catalog.latest_embeddings(family, pushes=False)  # the published file itself
    same = (
        len(stored_ids) == len(ids)
        and np.array_equal(
            stored_ids.astype(object), np.asarray(ids).astype(object)
        )  # no fixed-width cast: it truncates
        and np.allclose(stored, vectors, rtol=0, atol=0)
    )
    if not same:
        raise StateError(
            f"family {family!r} in {catalog.root} already has a version {version} with other vectors "
            "(another chain published there); publish into a fresh repo"
        )
    return True
