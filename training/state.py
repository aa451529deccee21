"""The persisted training state of a work directory (JSON via pydantic; tensors via torch.save).

What training version k+1 later needs is exactly what is recorded here: how the data was loaded
(and its fingerprint, to notice data that changed), the strategy and its parameters, the training
config and seed, and per version the model checkpoint (architecture + state_dict), B_k and the
published embeddings. Pickle is never used: checkpoints hold only tensors and are loaded with
``torch.load(..., weights_only=True)``; every file's sha256 is recorded and checked on load.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from feast_bc.atomic import atomic_write, atomic_write_bytes, sha256_file
from training.config import TrainingConfig
from training.data.config import DataConfig
from training.errors import StateError
from training.record import TrainedVersion
from training.strategies import StrategySpec

STATE_FILENAME = "state.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileRef(_Strict):
    """A file of the state directory, pinned by content."""

    path: str = Field(description="file name inside the state directory")
    sha256: str
    size_bytes: int


class PublishRecord(_Strict):
    repo: str
    published_at: datetime
    families: list[str]


class VersionState(TrainedVersion):
    """A trained version in the work directory: its record plus the files that hold it."""

    checkpoint: FileRef = Field(description="M_k state_dict (Fix-M0 points at M_0's file)")
    transform: FileRef | None = Field(None, description="B_k weight, (D_k-1, D_k); None for version 0")
    embeddings: FileRef = Field(description="user, item, user_ver0, item_ver0 tensors")
    trained_at: datetime
    published: PublishRecord | None = None


class TrainingState(_Strict):
    schema_version: Literal[1] = 1
    data: DataConfig
    dataset_name: str
    dataset_fingerprint: str
    strategy: StrategySpec
    config: TrainingConfig
    seed: int
    repo: str | None = Field(None, description="default feature repo to publish into")
    project: str | None = Field(None, description="Feast project used when that repo is created")
    versions: list[VersionState] = Field(default_factory=list)


def read_state(directory: Path) -> TrainingState:
    path = directory / STATE_FILENAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StateError(f"no training state in {directory} (train version 0 there first)") from None
    try:
        return TrainingState.model_validate_json(text)
    except ValueError as exc:
        raise StateError(f"{path} is not a valid training state: {exc}") from None


def write_state(directory: Path, state: TrainingState) -> None:
    atomic_write_bytes(directory / STATE_FILENAME, (state.model_dump_json(indent=2) + "\n").encode())


def save_tensors(directory: Path, name: str, tensors: dict[str, torch.Tensor]) -> FileRef:
    path = directory / name
    cpu = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    atomic_write(path, lambda tmp: torch.save(cpu, tmp))
    return FileRef(path=name, sha256=sha256_file(path), size_bytes=path.stat().st_size)


def load_tensors(directory: Path, ref: FileRef, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    path = directory / ref.path
    if not path.is_file():
        raise StateError(f"training state file {path} is missing")
    if sha256_file(path) != ref.sha256:
        raise StateError(f"training state file {path} does not match its recorded sha256 (changed or damaged)")
    return torch.load(path, map_location=device, weights_only=True)
