"""Models as a user writes them: plain nn.Modules (tests/data/own: the own-code tests' project)."""

import torch
from torch import nn


class TinyNet(nn.Module):
    """Two linear layers over a feature vector."""

    def __init__(self, in_features: int, classes: int, width: int = 32, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(width, classes))

    def forward(self, x):
        return self.net(x)


class DictNet(nn.Module):
    """Reads batch['features'] by name and returns a dict."""

    def __init__(self, num_features: int, classes: int = 3, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(num_features, width), nn.Tanh(), nn.Linear(width, classes))

    def forward(self, features):
        return {"logits": self.net(features)}


class Broken(nn.Module):
    def __init__(self, in_features: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features + 1, classes)  # one feature too many: a shape error at step 1

    def forward(self, x):
        return self.fc(x)
