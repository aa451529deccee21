"""The publish gate: limits a repo declares for new versions, and the decision recorded per version.

Limits live in ``<catalog>/publish_gate.json`` (inside a repo: ``bc_catalog/publish_gate.json``),
written by hand or by ``feast-bc gate``::

    {"max_alignment_error": 0.3,                      # to every live (not retired) older version
     "max_alignment_error_per_version": {"0": 0.5},   # overrides it for target version 0
     "min_metrics": {"val_recall@50": 0.1},           # the publish's own metrics
     "max_metrics": {},
     "families": {"user_embedding": {"max_alignment_error": 0.4}}}

A ``families`` section overrides the top-level limits for that family, field by field (a field it
sets replaces the top-level one whole). No file: no gate, and nothing is recorded (``gate`` stays
absent from the version). With a file, every publish through :meth:`feast_bc.Catalog.publish` is
measured; a version that breaks a limit is refused (:class:`~feast_bc.errors.PublishRefusedError`,
nothing written) unless published with ``force=True``, and the decision with its figures is
recorded on the version (:class:`GateDecision`, ``VersionRecord.gate``).

**Alignment error to version j** (what consumers pinned to j would see change): on the entities
present both in the new and in the current latest embeddings, ``today = C_j(z_{k-1})`` (what
version j serves now) and ``after = C_j(B_k(z_k))`` (what it would serve after the publish), with
C_j the catalog's composed chain B_{j+1}..B_{k-1} (the identity for j = k-1). The error is
``mean_i ||after_i - today_i|| / mean_i ||today_i||``: relative, so one limit fits every dimension.
Computed in float64, in chunks of rows. Version 0 has no older version: only metric limits apply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import ValidationError

from feast_bc.atomic import atomic_write_bytes, sha256_bytes
from feast_bc.drift import drift_since_publish
from feast_bc.errors import GateConfigError, PublishRefusedError
from feast_bc.gate_records import GATE_FILENAME, GateCheck, GateDecision, GateFile
from feast_bc.transforms import BackwardTransform, IdentityTransform, LinearTransform

if TYPE_CHECKING:  # the gate reads through a CatalogReader; it does not import the catalog package
    from feast_bc.catalog.reader import CatalogReader

MAX_GATE_BYTES = 1 << 20
_CHUNK_ROWS = 8192


# ----------------------------------------------------------------------------- the limits file
def gate_path(root: Path) -> Path:
    return Path(root) / GATE_FILENAME


def read_gate_file(root: Path) -> tuple[GateFile, str] | None:
    """(limits, sha256 of the file) of the catalog at ``root``; None when it declares none."""
    path = gate_path(root)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_GATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise GateConfigError(f"publish gate limits {path} cannot be read: {exc}") from None
    if len(data) > MAX_GATE_BYTES:
        raise GateConfigError(f"publish gate limits {path} is larger than {MAX_GATE_BYTES} bytes; not a limits file")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise GateConfigError(f"publish gate limits {path} is not valid JSON: {exc}") from None
    try:
        limits = GateFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise GateConfigError(
            f"publish gate limits {path} are invalid: {problems} (fields: max_alignment_error, "
            "max_alignment_error_per_version, min_metrics, max_metrics, families)"
        ) from None
    return limits, sha256_bytes(data)


def write_gate_file(root: Path, limits: GateFile | None) -> Path:
    """Replace the limits file atomically (None removes it: no gate)."""
    path = gate_path(root)
    if limits is None:
        path.unlink(missing_ok=True)
        return path
    text = json.dumps(limits.model_dump(mode="json", exclude_unset=True), indent=2, sort_keys=True) + "\n"
    Path(root).mkdir(exist_ok=True)
    atomic_write_bytes(path, text.encode())
    return path


# ----------------------------------------------------------------------------- evaluation
def measures_alignment(gate_file: tuple[GateFile, str] | None, family: str, transform) -> bool:
    """Whether judging a publish of ``family`` with ``transform`` measures alignment errors (and so
    needs the current latest's vectors)."""
    return gate_file is not None and transform is not None and gate_file[0].limits_for(family).measures_alignment


def evaluate(
    gate_file: tuple[GateFile, str] | None,
    family: str,
    current,
    *,
    ids: np.ndarray,
    vectors: np.ndarray,
    transform: BackwardTransform | None,
    metrics: Mapping[str, float],
    catalog: CatalogReader,
    latest: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> GateDecision | None:
    """The gate's decision on publishing (ids, vectors, transform, metrics) as the next version of
    ``family`` over the manifest ``current`` (None for version 0), under ``gate_file``
    (:func:`read_gate_file`; None: no limits declared, no decision). Inputs are the publisher's
    validated ones; ``latest`` the current latest's (ids, vectors) if already read. Nothing is written."""
    if gate_file is None:
        return None
    gate, sha = gate_file
    limits = gate.limits_for(family)
    checks = []
    if current is not None and measures_alignment(gate_file, family, transform):
        old = latest if latest is not None and latest[1] is not None else None
        errors = alignment_errors(catalog, family, current, ids, vectors, transform, latest=old)
        for j, (err, note) in sorted(errors.items()):
            limit_name, limit = limits.alignment_limit(j)
            if limit is not None:
                ok = err is not None and err <= limit
                name = f"alignment error to v{j}"
                checks.append(
                    GateCheck(
                        name=name, limit_name=limit_name, bound="max", limit=limit, measured=err, passed=ok, note=note
                    )
                )
    if current is not None and limits.max_drift_since_publish is not None:
        checks += _drift_checks(catalog, family, current, (ids, vectors, transform), limits.max_drift_since_publish)
    for bound, table in (("min", limits.min_metrics), ("max", limits.max_metrics)):
        for name, limit in sorted(table.items()):
            got = metrics.get(name)
            ok = got is not None and (got >= limit if bound == "min" else got <= limit)
            note = "" if got is not None else "not reported with the publish"
            checks.append(
                GateCheck(
                    name=name,
                    limit_name=f"{bound}_metrics[{name!r}]",
                    bound=bound,
                    limit=limit,
                    measured=got,
                    passed=ok,
                    note=note,
                )
            )
    return GateDecision(passed=all(c.passed for c in checks), limits_sha256=sha, limits=limits, checks=checks)


def _drift_checks(catalog, family: str, current, proposal, limit: float) -> list[GateCheck]:
    """One check per served version: the drift since its publish the proposed version would cause."""
    ids, vectors, transform = proposal
    step = transform if transform is not None else IdentityTransform(vectors.shape[1])
    checks = []
    for j, drift in sorted(drift_since_publish(catalog, family, current, proposal=(ids, vectors, step)).items()):
        measured = None if drift is None else drift.mean_relative
        note = "" if drift is not None else f"v{j} was published without a reference sample (before feast_bc kept one)"
        checks.append(
            GateCheck(
                name=f"drift since publish of v{j}",
                limit_name="max_drift_since_publish",
                bound="max",
                limit=limit,
                measured=measured,
                passed=measured is not None and measured <= limit,
                note=note,
            )
        )
    return checks


def refusal(failed: list[tuple[str, int, GateDecision]], root: Path, families: int) -> PublishRefusedError:
    """The error of a publish the gate refused: (family, version, failed decision) per refused
    family, out of ``families`` in the publish (none of them is written)."""
    if families == 1:
        family, version, decision = failed[0]
        failures = "; ".join(c.describe() for c in decision.failed)
        return PublishRefusedError(
            f"family {family!r}, version {version} refused by the publish gate ({gate_path(root)}): {failures}. "
            "Nothing was written. Fix the version, or relax the limit (`feast-bc gate`)."
        )
    versions = sorted({version for _, version, _ in failed})
    detail = " | ".join(f"{family}: " + "; ".join(c.describe() for c in d.failed) for family, _, d in failed)
    return PublishRefusedError(
        f"version {'/'.join(map(str, versions))} refused by the publish gate ({gate_path(root)}), no family "
        f"written: {detail}. Fix the version, or relax the limits (`feast-bc gate`)."
    )


def alignment_errors(
    catalog: CatalogReader,
    family: str,
    current,
    ids: np.ndarray,
    vectors: np.ndarray,
    transform: BackwardTransform,
    *,
    latest: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[int, tuple[float | None, str]]:
    """Live version j -> (relative alignment error, note) of publishing (ids, vectors, B_k) (module
    docstring); ``latest``: the current latest's verified (ids, vectors), if the caller read them."""
    old_ids, old_vectors = latest if latest is not None else catalog.latest_embeddings(family, manifest=current)
    if ids.dtype.kind in "UO" or old_ids.dtype.kind in "UO":
        # Compare strings as Python objects: casting to the other array's fixed width ("<U2")
        # would truncate "aa" to match "a".
        ids, old_ids = ids.astype(object), old_ids.astype(object)
    _, new_rows, old_rows = np.intersect1d(ids, old_ids, assume_unique=True, return_indices=True)
    step = _float64_map(transform)
    out: dict[int, tuple[float | None, str]] = {}
    for j in current.served_versions:
        if not new_rows.size:
            out[j] = (None, "no entity in common with the current latest")
            continue
        chain = _float64_map(catalog.composed(family, current.latest_version, j, current))
        moved = scale = 0.0
        for start in range(0, len(new_rows), _CHUNK_ROWS):
            today = chain(old_vectors[old_rows[start : start + _CHUNK_ROWS]])
            after = chain(step(vectors[new_rows[start : start + _CHUNK_ROWS]]))
            moved += float(np.linalg.norm(after - today, axis=1).sum())
            scale += float(np.linalg.norm(today, axis=1).sum())
        if scale > 0:
            out[j] = (moved / scale, "")
        else:
            out[j] = (None, f"version {j} vectors are all zero today")
    return out


def _float64_map(t: BackwardTransform):
    """x -> t(x) in float64 (linear maps exactly; other kinds through their own float32 transform)."""
    if isinstance(t, IdentityTransform):
        return lambda x: np.asarray(x, dtype=np.float64)
    if isinstance(t, LinearTransform):
        w_t = t.weight.astype(np.float64).T
        return lambda x: np.asarray(x, dtype=np.float64) @ w_t
    return lambda x: np.asarray(t.transform(np.asarray(x, dtype=np.float32)), dtype=np.float64)
