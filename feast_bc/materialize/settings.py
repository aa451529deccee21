"""Every setting of a materialization pass, each with its default in one place.

Both engines' ``batch_engine`` blocks of feature_store.yaml are this model plus their own keys
(:class:`feast_bc.engine.BCEngineConfig`, :class:`feast_bc.ray_engine.BCRayEngineConfig`), and the
pass (:func:`feast_bc.materialize.run_pass`) reads its settings from the same object, so no
default is written twice.
"""

from __future__ import annotations

from feast.repo_config import FeastConfigBaseModel
from pydantic import Field

from feast_bc.embeddings import ROW_GROUP_ROWS


class PassSettings(FeastConfigBaseModel):
    """The settings of one pass over a family's latest file (see the module docstring)."""

    batch_rows: int = Field(default=ROW_GROUP_ROWS, ge=1)
    """Most rows read, transformed and written per step. A step never crosses a row group of the
    latest file (that is what keeps a Ray slice's floats identical to the whole-file pass,
    :mod:`feast_bc.materialize.stream`), and feast_bc writes row groups of ``ROW_GROUP_ROWS``
    (65,536) rows, so a value
    above that changes nothing; below it, it bounds memory: a few times batch_rows x dim x 4 bytes
    per view of the pass."""
    fused: bool = True
    """The views of one family requested by the same ``feast materialize`` share one pass: one read
    of the latest file, and on Redis one HSET per entity for all of them. False: one pass per view."""
    blas_threads: int | None = Field(default=1, ge=1)
    """BLAS threads per matmul while a pass runs (None: BLAS's own default). One, because the pass is
    already concurrent (read + matmul, writer thread, store) and BLAS's idle helper threads spin
    (:func:`feast_bc.materialize.stream.blas_threads`); raise it where the online store is remote and
    cores would idle."""
    transform_threads: int = Field(default=2, ge=1)
    """Threads that transform the views of a batch concurrently (each matmul on its own thread). 1:
    one view after the other on the reading thread."""


#: The pass settings when nobody configured any (tests, direct calls).
DEFAULT_SETTINGS = PassSettings()
