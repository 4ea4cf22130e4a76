"""Models the own_code_* golden specs name (read, never imported)."""

from typing import Literal

from torch import nn


class TinyNet(nn.Module):
    """Two linear layers."""

    def __init__(self, in_features: int, classes: int, width: int = 64,
                 act: Literal["relu", "gelu"] = "relu", dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, classes))

    def forward(self, x):
        return self.net(x)
