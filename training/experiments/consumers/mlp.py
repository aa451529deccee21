"""The consumer model C_0 of the paper (``recsys/models/mlp.py``) and its training loop.

Architecture, exactly as the authors' code: Linear(in, h) -> BatchNorm -> ReLU -> Dropout, then
Linear(h, h) -> BatchNorm -> Dropout (the second block has *no* ReLU in the code), then
Linear(h, 1). Training as ``train_model.py``: BCEWithLogits, Adam lr 1e-3, batch 2048, shuffled
every epoch, validation ROC-AUC after every epoch, keep the state with the best validation AUC.

The one change is *when training stops*: the paper runs 300 epochs; here ``max_epochs`` caps the
run and ``patience`` stops it once the validation AUC has not improved for that many epochs. The
state kept is the same rule's (best validation AUC so far), so stopping early only drops epochs
whose states the paper would not have kept unless they beat an earlier best after a plateau.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm.auto import tqdm

from training.experiments.consumers.metrics import roc_auc

PAPER_HIDDEN_DIMS: tuple[int, ...] = (128, 256, 512, 1024)
PAPER_DROPOUTS: tuple[float, ...] = (0.0, 0.25, 0.5)
_PREDICT_CHUNK = 65_536


class ConsumerSettings(BaseModel):
    """How consumer models are trained and selected (the paper's values unless noted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_dims: tuple[int, ...] = Field(PAPER_HIDDEN_DIMS, description="grid of hidden sizes")
    dropouts: tuple[float, ...] = Field(PAPER_DROPOUTS, description="grid of dropout rates")
    num_seeds: int = Field(10, ge=1, description="seeds 0..N-1 of the selected setting")
    max_epochs: int = Field(300, ge=1, description="user and item tasks (paper: 300)")
    patience: int | None = Field(
        None, ge=1, description="stop after this many epochs without a better validation AUC (paper: none)"
    )
    edge_max_epochs: int = Field(300, ge=1, description="the edge task (paper: 300; 100 on Grocery)")
    edge_patience: int | None = Field(None, ge=1)
    batch_size: int = Field(2048, ge=2)
    learning_rate: float = Field(1e-3, gt=0)

    def for_level(self, level: str) -> tuple[int, int | None]:
        """(max_epochs, patience) for a task level: the edge task has ~100x more rows per epoch."""
        if level == "edge":
            return self.edge_max_epochs, self.edge_patience
        return self.max_epochs, self.patience

    @property
    def grid(self) -> list[tuple[int, float]]:
        """(hidden, dropout) in the authors' loop order (dropout outer), which breaks ties in selection."""
        return [(h, d) for d in self.dropouts for h in self.hidden_dims]


class ConsumerMLP(nn.Module):
    """The paper's two-block MLP producing one logit."""

    def __init__(self, input_dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).squeeze(-1)


@dataclass
class ConsumerFit:
    """A trained consumer: the best-validation state (loaded, eval mode) and how it was reached."""

    model: ConsumerMLP
    hidden_dim: int
    dropout: float
    seed: int
    val_auc: float  # NaN when the validation rows hold one class only (then the last state is kept)
    best_epoch: int
    epochs_run: int
    seconds: float
    val_history: list[float] = field(default_factory=list)


def as_tensor(x: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Logits for every row (eval mode: BatchNorm uses its running statistics, dropout is off)."""
    model.eval()
    device = next(model.parameters()).device
    x = x if isinstance(x, torch.Tensor) else as_tensor(x, device)
    out = [model(x[s : s + _PREDICT_CHUNK].to(device)) for s in range(0, len(x), _PREDICT_CHUNK)]
    return torch.cat(out).cpu().numpy().astype(np.float64) if out else np.zeros(0)


def fit_consumer(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: np.ndarray,
    *,
    hidden_dim: int,
    dropout: float,
    seed: int,
    settings: ConsumerSettings,
    level: str = "user",
    progress: bool = False,
    desc: str = "consumer",
) -> ConsumerFit:
    """Train one consumer; the global torch RNG is left untouched (seeded inside a forked RNG).

    A trailing mini-batch of a single row is skipped: BatchNorm cannot normalise one sample in
    training mode (the original's DataLoader would crash on it). The epoch cap and patience are the
    settings' values for the task ``level`` (:meth:`ConsumerSettings.for_level`).
    """
    started = time.perf_counter()
    device = x_train.device
    max_epochs, patience = settings.for_level(level)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConsumerMLP(x_train.shape[1], hidden_dim, dropout).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
        loss_fn = nn.BCEWithLogitsLoss()
        shuffle = torch.Generator().manual_seed(seed)
        best_auc, best_epoch, best_state = -math.inf, 0, None
        history: list[float] = []
        stale = 0
        bar = tqdm(range(1, max_epochs + 1), desc=desc, disable=not progress, leave=False, unit="epoch")
        epoch = 0
        for epoch in bar:
            model.train()
            order = torch.randperm(len(x_train), generator=shuffle).to(device)
            for start in range(0, len(order), settings.batch_size):
                rows = order[start : start + settings.batch_size]
                if len(rows) < 2:
                    continue
                loss = loss_fn(model(x_train.index_select(0, rows)), y_train.index_select(0, rows))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            auc = roc_auc(y_val, predict(model, x_val))
            history.append(auc)
            if auc > best_auc:  # NaN never compares greater: a one-class validation set selects nothing
                best_auc, best_epoch, stale = auc, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
            bar.set_postfix(auc=f"{auc:.4f}", best=f"{best_auc:.4f}")
            if patience is not None and stale >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_auc, best_epoch = float("nan"), epoch
    model.eval()
    return ConsumerFit(
        model, hidden_dim, dropout, seed, float(best_auc), best_epoch, epoch, time.perf_counter() - started, history
    )
