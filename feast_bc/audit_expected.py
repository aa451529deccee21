"""What each pin of a family must read for the audit's sample, and how a read compares with it.

The sample and its expected values come from the catalog exactly as `feast-bc export` computes them
(the latest with its pushes, transformed to each served version); a value that differs is *stale*
when it equals what an older latest would give (older embeddings still in the catalog), else
*wrong*. :mod:`feast_bc.audit` reads the pins and turns verdicts into findings.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import pyarrow.parquet as pq

from feast_bc.catalog import Catalog
from feast_bc.errors import FeastBCError
from feast_bc.manifest import FamilyManifest

logger = logging.getLogger(__name__)

#: Largest absolute difference between an online value and the catalog's that counts as equal.
TOLERANCE = 1e-5


class FamilySample:
    """The ids sampled for one family and what each served version must read for them."""

    def __init__(self, manifest: FamilyManifest, ids: np.ndarray, absent: np.ndarray, values: dict, stale: dict):
        self.manifest = manifest
        self.ids = ids  # ids of the latest: each must read its value
        self.absent = absent  # ids only older stored versions have: each must read None
        self.values = values  # version -> (len(ids), dim) float32
        self.stale = stale  # version -> [(older latest, (len(ids), dim) or None per row)]


def _spread(values: np.ndarray, n: int) -> np.ndarray:
    if len(values) <= n:
        return values
    return values[np.linspace(0, len(values) - 1, num=n).round().astype(np.int64)]


def expected_values(catalog: Catalog, sample: int, report) -> dict[str, FamilySample]:
    out = {}
    for family in catalog.families():
        try:
            manifest = catalog.verify(family)
            join_key = manifest.entity.join_key
            latest_path = catalog.artifact_path(family, manifest.latest.embeddings)
            latest_ids = pq.read_table(latest_path, columns=[join_key]).column(join_key).to_numpy(zero_copy_only=False)
            ids = _spread(latest_ids, sample)
            older = _older_stored(catalog, manifest)
            absent = np.setdiff1d(np.concatenate([ids_ for _, ids_ in older]) if older else latest_ids[:0], latest_ids)
            absent = _spread(absent, max(1, sample // 4))
            # what `feast-bc export` computes (export_version's steps), the sampled rows read once
            found, latest = catalog.latest_embeddings(family, ids=ids, manifest=manifest)
            ids = np.asarray(found, dtype=ids.dtype)
            values, stale = {}, {}
            for v in manifest.served_versions:
                values[v] = catalog.transform_vectors(family, latest, manifest.latest_version, v, manifest)
                stale[v] = _stale_candidates(catalog, manifest, older, ids, v)
            out[family] = FamilySample(manifest, ids, absent, values, stale)
        except (FeastBCError, OSError) as exc:
            report.notes.append(f"{family}: not audited ({exc}); `feast-bc verify` says what is wrong")
    return out


def _older_stored(catalog: Catalog, manifest: FamilyManifest) -> list[tuple[int, np.ndarray]]:
    """(version, ids) of every older version whose embeddings file is still in the catalog."""
    found = []
    join_key = manifest.entity.join_key
    for rec in manifest.versions[:-1]:
        if rec.embeddings is None:
            continue
        path = catalog.artifact_path(manifest.family, rec.embeddings)
        try:
            found.append(
                (rec.version, pq.read_table(path, columns=[join_key]).column(join_key).to_numpy(zero_copy_only=False))
            )
        except (OSError, KeyError, ValueError) as exc:
            logger.info(
                "%s v%s: older embeddings unreadable (%s); not used to tell stale values",
                manifest.family,
                rec.version,
                exc,
            )
    return found


def _stale_candidates(catalog, manifest, older, ids, version) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """What version ``version`` would read for ``ids`` had it been computed from an older latest:
    (older latest, row mask of ids it has, their values)."""
    from feast_bc.embeddings import read_embeddings

    out = []
    for m, m_ids in older:
        if m < version:
            continue
        has = np.isin(ids, m_ids)
        if not has.any():
            continue
        rec = manifest.version(m)
        try:
            _, vecs = read_embeddings(
                catalog.artifact_path(manifest.family, rec.embeddings),
                manifest.entity.join_key,
                rec.dim,
                ids=ids[has],
                id_dtype=manifest.entity.dtype,
            )
            out.append((m, has, catalog.transform_vectors(manifest.family, vecs, m, version, manifest)))
        except FeastBCError as exc:
            logger.info("%s: stale values of v%s from v%s not computable (%s)", manifest.family, version, m, exc)
    return out


class Verdict(NamedTuple):
    """What a pin served for the sample: ids per kind of discrepancy, and the largest |Δ| of the matches."""

    missing: list[str]
    extra: list[str]
    wrong: list[str]
    stale: dict[int, list[str]]
    worst: float | None


def compare(fs: FamilySample, version: int, ids: np.ndarray, values: list) -> Verdict:
    """Each sampled id's served value against the catalog's (the latest's ids first, then absent ones)."""
    dim = fs.manifest.version(version).dim
    n = len(fs.ids)
    missing, extra, wrong, stale = [], [], [], {}
    worst = None
    want = fs.values[version]
    for row, got in enumerate(values):
        key = str(ids[row])
        if row >= n:
            if got is not None:
                extra.append(key)
            continue
        if got is None:
            missing.append(key)
            continue
        vec = np.asarray(got, dtype=np.float32)
        if vec.shape != (dim,):
            wrong.append(key)
            continue
        diff = float(np.abs(vec - want[row]).max())
        worst = diff if worst is None else max(worst, diff)
        if diff <= TOLERANCE:
            continue
        source = _stale_source(fs.stale[version], row, vec)
        if source is None:
            wrong.append(key)
        else:
            stale.setdefault(source, []).append(key)
    return Verdict(missing, extra, wrong, stale, worst)


def _stale_source(candidates, row: int, vec: np.ndarray) -> int | None:
    for m, has, values in candidates:
        if not has[row]:
            continue
        pos = int(np.count_nonzero(has[:row]))
        if values.shape[1] == vec.shape[0] and float(np.abs(values[pos] - vec).max()) <= TOLERANCE:
            return m
    return None
