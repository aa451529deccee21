"""`python -m training fit-transform`: fit B_k post hoc for embeddings trained elsewhere, report, publish.

The team hands over version k of a family as a parquet file (one row per entity: the id column and
a list<float> vector column, as ``feast-bc export`` writes them). B_k is fit on the entities the new
file shares with the published latest version (:mod:`training.posthoc_fit`); the command prints
how far every still-served older version would move -- what its consumers would notice -- and,
with ``--publish``, publishes z_k and B_k through the catalog (and ``feast apply`` unless
``--no-apply``). Nothing is written without ``--publish``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feast_bc import Catalog
from feast_bc.cli import parse_pairs
from feast_bc.embeddings import list_array_to_matrix
from feast_bc.errors import PublishRefusedError
from feast_bc.naming import EMBEDDING_FEATURE
from feast_bc.publish_gate import alignment_errors
from feast_bc.transforms import LinearTransform
from training.arguments import positive_int
from training.backward_compat import frozen_chain
from training.errors import DatasetError
from training.posthoc_fit import FIT_METHODS, fit_backward_transform, match_by_id


@dataclass(frozen=True)
class VersionShift:
    """How far version ``version``'s served values would move over the ``entities`` both versions
    hold: mean L2 distance / mean L2 norm of today's values (the publish gate's alignment error)."""

    version: int
    relative: float | None  # None: not measurable (the version's vectors are all zero today)
    entities: int


@dataclass(frozen=True)
class FitTransformResult:
    family: str
    version: int  # the version B_k would create
    method: str
    transform: np.ndarray
    matched: int
    new_entities: int  # in the new file but not in the previous version: no target, still published
    dropped_entities: int  # in the previous version but not in the new file
    shifts: list[VersionShift]


def read_new_embeddings(
    path: str | Path, id_column: str, vector_column: str = EMBEDDING_FEATURE
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) from a parquet file; clear errors for a missing file or column."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable parquet file ({exc})") from None
    for column in (id_column, vector_column):
        if column not in table.column_names:
            raise DatasetError(f"{path}: no column {column!r}; the file has {table.column_names}")
    vectors = list_array_to_matrix(table.column(vector_column), what=f"{path}: {vector_column!r}")
    return table.column(id_column).to_numpy(zero_copy_only=False), vectors


def fit_for_catalog(
    catalog: Catalog | str | Path, family: str, ids, vectors, *, method: str = "least-squares", **options
) -> FitTransformResult:
    """Fit B_k from ``family``'s latest published version to (ids, vectors) and measure the shift of
    every served older version. Reads only; :func:`publish_fit` writes."""
    catalog = Catalog.locate(catalog)
    manifest = catalog.manifest(family)
    ids = _typed_ids(ids, manifest.entity.dtype, family)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise DatasetError(f"expected one vector per id: {len(ids)} ids, vectors of shape {vectors.shape}")
    old_ids, old_vectors = catalog.latest_embeddings(family, manifest=manifest)
    old_rows, new_rows = match_by_id(old_ids, ids)
    latest = manifest.latest_version
    older = frozen_chain(catalog, family, manifest)
    weight = fit_backward_transform(
        vectors[new_rows], old_vectors[old_rows], method=method, older_transforms=older, **options
    )
    # the publish gate's own measure, so the figures printed here are the ones a limit is checked against
    errors = alignment_errors(catalog, family, manifest, ids, vectors, LinearTransform(weight))
    shifts = [VersionShift(j, relative, len(new_rows)) for j, (relative, _) in sorted(errors.items(), reverse=True)]
    return FitTransformResult(
        family=family,
        version=latest + 1,
        method=method,
        transform=weight,
        matched=len(new_rows),
        new_entities=len(ids) - len(new_rows),
        dropped_entities=len(old_ids) - len(old_rows),
        shifts=shifts,
    )


def publish_fit(
    catalog: Catalog | str | Path,
    result: FitTransformResult,
    ids,
    vectors,
    *,
    metrics: dict[str, float] | None = None,
    description: str = "",
    force: bool = False,
):
    """Publish version k (all of ``ids``/``vectors``) with the fitted B_k; the version's own
    ``metrics`` (e.g. its recall) and the alignment figures (``alignment_rel_v<j>``) go into its
    metrics; the publish gate judges it (``force``: past it)."""
    catalog = Catalog.locate(catalog)
    metrics = {
        **(metrics or {}),
        **{f"alignment_rel_v{s.version}": s.relative for s in result.shifts if s.relative is not None},
    }
    return catalog.publish(
        result.family,
        ids=ids,
        vectors=np.asarray(vectors, dtype=np.float32),
        transform=result.transform,
        metrics=metrics,
        expected_version=result.version,
        force=force,
        description=description or f"B_{result.version} fit post hoc ({result.method}) on {result.matched} entities",
    )


def _typed_ids(ids, dtype: str, family: str) -> np.ndarray:
    ids = np.asarray(ids)
    if dtype == "int64":
        if ids.dtype.kind not in "iu":
            raise DatasetError(f"family {family!r} has int64 ids; the new file's ids are {ids.dtype}")
        if ids.dtype.kind == "u" and ids.size and int(ids.max()) > np.iinfo(np.int64).max:
            big = ids[ids > np.iinfo(np.int64).max]
            raise DatasetError(
                f"{len(big)} ids do not fit family {family!r}'s signed 64-bit join key (e.g. {int(big[0])}); "
                "they would wrap around to negative ids -- map them into the int64 range first"
            )
        return ids.astype(np.int64)
    if ids.dtype.kind not in "OUS":
        raise DatasetError(f"family {family!r} has string ids; the new file's ids are {ids.dtype}")
    return ids.astype(object)


def format_result(result: FitTransformResult) -> str:
    lines = [
        f"{result.family}: B_{result.version} ({result.method}, {result.transform.shape[1]} -> {result.transform.shape[0]}) "
        f"fit on {result.matched} entities; {result.new_entities} new (no target), {result.dropped_entities} no longer present",
        "served version  alignment error (mean L2 shift / mean L2 norm, the publish gate's measure)",
    ]
    lines += [f"v{s.version:<14d} " + ("n/a" if s.relative is None else f"{s.relative:.4f}") for s in result.shifts]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line
def add_subcommand(sub) -> None:
    s = sub.add_parser("fit-transform", help="fit B_k post hoc for new embeddings trained elsewhere (and publish)")
    s.add_argument("--repo", required=True, help="feature repo (or catalog directory) holding the family")
    s.add_argument("--family", required=True)
    s.add_argument("--new", required=True, help="parquet file: id column + list<float> vector column")
    s.add_argument("--id-column", help="default: the family's join key")
    s.add_argument("--vector-column", default=EMBEDDING_FEATURE)
    s.add_argument("--method", choices=FIT_METHODS, default="least-squares")
    s.add_argument("--ridge", type=float, default=1e-6, help="least-squares: ridge relative to the mean eigenvalue")
    s.add_argument(
        "--epochs", type=positive_int, default=200, help="sgd methods: epochs over the matched entities (>= 1)"
    )
    s.add_argument("--publish", action="store_true", help="publish z_k and B_k (default: report only)")
    s.add_argument("--no-apply", action="store_true", help="with --publish: do not run `feast apply`")
    s.add_argument("--force-publish", action="store_true", help="publish past the repo's publish gate (recorded)")
    s.add_argument(
        "--metric",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="the version's own metrics, recorded and judged by the gate (e.g. val_recall@50=0.31)",
    )
    s.set_defaults(func=cmd_fit_transform)


def cmd_fit_transform(args) -> int:
    catalog = Catalog.locate(args.repo)
    manifest = catalog.manifest(args.family)
    ids, vectors = read_new_embeddings(args.new, args.id_column or manifest.entity.join_key, args.vector_column)
    options = {"ridge": args.ridge} if args.method == "least-squares" else {}
    if args.method.startswith("sgd"):
        options["epochs"] = args.epochs
    metrics = parse_pairs(args.metric, "--metric")  # refused before any fitting
    result = fit_for_catalog(catalog, args.family, ids, vectors, method=args.method, **options)
    print(format_result(result))
    if not args.publish:
        print("nothing published (add --publish)")
        return 0
    try:
        record = publish_fit(
            catalog,
            result,
            _typed_ids(ids, manifest.entity.dtype, args.family),
            vectors,
            metrics=metrics,
            force=args.force_publish,
        )
    except PublishRefusedError as exc:
        raise exc.for_override("rerun this `fit-transform` with --force-publish") from None
    print(f"published {args.family} version {record.version}")
    repo = Path(args.repo)
    if not args.no_apply and (repo / "feature_store.yaml").is_file():
        from feast_bc.repo import apply as apply_repo  # Feast is loaded only to apply

        apply_repo(repo)
        print("applied to Feast -- run `feast materialize` to serve it")
    return 0
