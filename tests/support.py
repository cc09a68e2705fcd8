"""What several test files share by import: the repository's paths, the CLI as a subprocess, the
tiny classifier the detector tests score. The fixtures built on them are in conftest.py; the
AppTest helpers in apptest_support.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]  # the repository
DATA_ROOT = Path(os.environ.get("GAIA_VIZ_DATA_ROOT", ROOT.parent / "shared" / "data"))  # the real data


def run_cli(*args, cache=None, timeout=600) -> subprocess.CompletedProcess:
    """``python -m gaia_viz ARGS`` from the repository, its run cache at ``cache`` when given."""
    env = dict(os.environ)
    if cache is not None:
        env["GAIA_VIZ_CACHE_DIR"] = str(cache)
    return subprocess.run([sys.executable, "-m", "gaia_viz", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


class TinyNet(nn.Module):
    """conv -> bn -> ReLU module -> global average pool -> Linear, on 3-channel images: the ReLU
    module's output is the map the pooling reads, its pooled value the head's input."""

    def __init__(self, channels: int = 8, classes: int = 4, pool: nn.Module | None = None):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.pool = pool or nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def feature_map(self, x):
        return self.relu(self.bn(self.conv(x)))

    def penultimate(self, x):
        return torch.flatten(self.pool(self.feature_map(x)), 1)

    def forward(self, x):
        return self.fc(self.penultimate(x))


def tiny_net(channels: int = 8, classes: int = 4, pool: nn.Module | None = None, head_bias: bool = False) -> TinyNet:
    """A :class:`TinyNet` seeded with 0, in eval mode, with non-default BatchNorm running
    statistics (so train-mode and eval-mode forwards differ); ``head_bias`` also draws the head's
    bias from U(-1, 1)."""
    torch.manual_seed(0)
    net = TinyNet(channels, classes, pool)
    net.bn.running_mean.uniform_(-0.5, 0.5)
    net.bn.running_var.uniform_(0.5, 2.0)
    if head_bias:
        with torch.no_grad():
            net.fc.bias.uniform_(-1.0, 1.0)
    return net.eval()
