"""A participant architecture of the user's own, next to the config ("models.py:TinyCNN").

dkd-tune imports this file because the config names it; it never runs code from a checkpoint.
"""

from __future__ import annotations

from torch import Tensor, nn


class TinyCNN(nn.Module):
    """One conv block and a linear classifier: another architecture than dkd-tune's small CNN."""

    def __init__(self, channels: int = 1, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(4),  # 28x28 -> 7x7: the few features keep a CPU step cheap
        )
        self.classifier = nn.Linear(width * 7 * 7, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))
