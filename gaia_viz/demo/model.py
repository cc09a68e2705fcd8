"""The demo CNN: a small digit classifier with BatchNorm, and its loader.

Architecture (input 1x28x28, normalised with the ``demo-mnist28`` preset):

    conv1 (1->32, 3x3) - bn1 - relu1 - pool1 (2x2)   -> 32x14x14
    conv2 (32->64, 3x3) - bn2 - relu2 - pool2 (2x2)  -> 64x7x7
    conv3 (64->96, 3x3) - bn3 - relu3                -> 96x7x7
    gap (global average pool) - flatten             -> 96
    fc (96->10)                                      -> logits

Every stage is its own named module (``conv1``, ``bn1``, ``relu1``, ...) so GAIA can hook
any of them by its ``named_modules()`` name; the ReLUs are not in-place, so hooks see the
tensors the next layer sees. The weights ship as ``assets/demo_cnn.safetensors`` and are
reproduced by ``python -m gaia_viz.demo.train --out assets/demo_cnn.safetensors``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gaia_viz.errors import CheckpointError

NUM_CLASSES = 10
CHANNELS = (32, 64, 96)
ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"
DEMO_CHECKPOINT = ASSETS_DIR / "demo_cnn.safetensors"
DEMO_METADATA = ASSETS_DIR / "demo_cnn.json"


class DemoCNN(nn.Module):
    """Three conv-bn-relu stages, two 2x2 max-pools, global average pool, linear head ``fc``."""

    def __init__(self, num_classes: int = NUM_CLASSES, channels: tuple[int, int, int] = CHANNELS):
        super().__init__()
        c1, c2, c3 = channels
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c3)
        self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


def load_demo_model(checkpoint: str | Path | None = None) -> DemoCNN:
    """The trained demo CNN in eval mode on the CPU (weights: ``assets/demo_cnn.safetensors``)."""
    from safetensors.torch import load_file

    path = Path(checkpoint) if checkpoint is not None else DEMO_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(
            f"demo checkpoint {path} not found; recreate it with "
            "`python -m gaia_viz.demo.train --out assets/demo_cnn.safetensors`"
        )
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"demo checkpoint {path} is unreadable ({exc}); retrain it with "
                              "`python -m gaia_viz.demo.train --out assets/demo_cnn.safetensors`") from exc
    model = DemoCNN()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"demo checkpoint {path} does not fit DemoCNN: {exc}") from exc
    return model.eval()
