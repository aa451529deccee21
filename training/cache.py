"""A content-addressed cache of freshly trained (BPR-only) models, shared between strategies.

Why: at version 0 every strategy trains the same M_0 (same data, architecture, schedule and seed),
and the post-hoc strategies reuse the No-BC models by definition (as in the paper's code, which
loads the No-BC checkpoint). Running all 8 strategies would otherwise train those models up to 8
times. The key hashes everything the result depends on, so a hit is the model that training would
have produced, and a changed input simply misses.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from feast_bc.atomic import atomic_write, atomic_write_bytes


class CachedFit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    val_recall: dict[int, float]
    selected_epoch: int
    epochs_run: int
    seconds: float


class ModelCache:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @staticmethod
    def key(parts: dict) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def get(self, key: str, device: torch.device) -> tuple[dict[str, torch.Tensor], CachedFit] | None:
        weights, meta = self.directory / f"{key}.pt", self.directory / f"{key}.json"
        if not (weights.is_file() and meta.is_file()):
            return None
        fit = CachedFit.model_validate_json(meta.read_text())
        return torch.load(weights, map_location=device, weights_only=True), fit

    def put(self, key: str, state_dict: dict[str, torch.Tensor], fit: CachedFit) -> None:
        # Weights first: a reader only trusts an entry whose metadata exists.
        atomic_write(self.directory / f"{key}.pt", lambda tmp: torch.save(state_dict, tmp))
        atomic_write_bytes(self.directory / f"{key}.json", fit.model_dump_json().encode())
