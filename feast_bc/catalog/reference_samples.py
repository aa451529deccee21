"""Writing a version's reference sample at publish (what :mod:`feast_bc.drift` compares with).

Inside the catalog package because it is part of publishing a version (a content-addressed
artifact named by the catalog's layout); the sample's choice and the drift computation live in
:mod:`feast_bc.drift`, below the catalog, so the publish gate can use them too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feast_bc.atomic import write_content_addressed
from feast_bc.catalog.layout import artifact_ref_path, artifact_stem
from feast_bc.drift import sample_rows
from feast_bc.manifest import ReferenceArtifact
from feast_bc.naming import EMBEDDING_FEATURE


def write_reference(
    art_dir: Path, version: int, join_key: str, ids: np.ndarray, vectors: np.ndarray
) -> tuple[Path, ReferenceArtifact]:
    """Write the reference sample of a version being published (content-addressed, atomic)."""
    rows = sample_rows(ids)
    table = pa.table(
        {
            join_key: pa.array(ids[rows]),
            EMBEDDING_FEATURE: pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(vectors[rows], dtype=np.float32).ravel()), vectors.shape[1]
            ),
        }
    )
    path, sha, size = write_content_addressed(
        art_dir, artifact_stem(version, "reference"), ".parquet", lambda tmp: pq.write_table(table, tmp)
    )
    return path, ReferenceArtifact(path=artifact_ref_path(path), sha256=sha, size_bytes=size, rows=len(rows))
