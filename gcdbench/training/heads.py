"""Small trainable layers that sit on the backbone's pooled features (docs/methods/glean.md §2)."""

from __future__ import annotations

import torch
from torch import Tensor


class ProjectionHead(torch.nn.Module):
    """Linear(h, h) -> ReLU -> Dropout(0.1) -> Linear(h, feat_dim).

    :meth:`forward` returns the raw output (what the classifier reads);
    :meth:`normalised` the L2-normalised one (what the contrastive losses read).
    """

    def __init__(self, hidden_size: int, feat_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(hidden_size, hidden_size),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden_size, feat_dim),
        )

    def forward(self, pooled: Tensor) -> Tensor:
        return self.layers(pooled)

    def normalised(self, pooled: Tensor) -> Tensor:
        return torch.nn.functional.normalize(self.forward(pooled), dim=-1)


class KnownClassifier(torch.nn.Module):
    """Dropout(0.1) -> Linear(in, n_known): MTP's classifier on pooled features, and the
    round loop's classifier on the projection head's output."""

    def __init__(self, in_features: int, num_known: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.linear = torch.nn.Linear(in_features, num_known)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(self.dropout(features))
