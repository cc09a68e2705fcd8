"""Whether GAIA-Z is defined for a model: do its hooked gradients hold exact zeros?

GAIA-Z counts, per channel, the positions where the gradient is exactly zero. Such zeros
come from piecewise-linear activations (ReLU, ReLU6, ...: zero slope where inactive).
Smooth activations (GELU, SiLU, ...) have a slope that is never exactly zero, so every
non-zero ratio is 1 and GAIA-Z is a constant that carries no information. This module
measures how many data-dependent zeros a batch holds (:func:`exact_zero_fraction`) and
words the warning given when there are almost none (:func:`no_exact_zeros_note`).

Zeros that every channel of a layer has alike (the rows and columns a strided convolution
skips, padded borders) are the same for every input and do not count: for each sample
and layer only the zeros a channel has beyond the layer's channel with the fewest zeros
are counted. Measured with 2 random-init images at 112-128 px (README, support table):
ReLU networks have 16-53 % of such zeros (torchvision and timm ResNets, RegNets, VGG-BN,
DenseNet, MobileNetV2, BiT's ResNet-v2; the trained CIFAR ResNets 50 %), networks with
smooth activations exactly 0 % (EfficientNet, ConvNeXt, also where strided convolutions
leave structural zeros), MobileNetV3 (ReLU in its first blocks, Hardswish after) 3 %.
:data:`EXACT_ZERO_THRESHOLD` (1 %) sits between "none" and every model with a ReLU layer,
and far above the rare zeros a smooth activation gives by float underflow in its tails.

The opposite case has its own note (:func:`all_zero_note`): a sample whose every hooked
gradient is exactly zero (every ratio 0: the output does not depend on these layers for it,
e.g. an all-zero input through a ReLU network, or a zeroed head). Such samples are left out
of the exact-zero fraction, so they are never reported as "no exact zeros".
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Sequence

import numpy as np
from torch import nn

from gaia_viz.errors import GaiaVizWarning

EXACT_ZERO_THRESHOLD = 0.01
NO_EXACT_ZEROS_NOTE = "GAIA-Z: the hooked gradients hold almost no exact zeros"
# activations whose gradient is exactly zero on part of their domain
ZERO_SLOPE_ACTIVATIONS = frozenset({
    "ReLU", "ReLU6", "RReLU", "Hardtanh", "Threshold", "Hardswish", "Hardsigmoid", "HardSwish",
    "HardSigmoid", "HardSwishMe", "HardSigmoidMe",
})
_NOT_ACTIVATIONS = frozenset({"MultiheadAttention", "Softmax", "Softmax2d", "LogSoftmax", "Softmin"})


ALL_ZERO_NOTE = "GAIA-Z: every gradient is exactly zero"


class NoExactZerosWarning(GaiaVizWarning):
    """GAIA-Z was computed on gradients that hold almost no exact zeros."""


class ZeroGradientWarning(GaiaVizWarning):
    """GAIA-Z was computed on gradients that are exactly zero everywhere (the opposite case)."""


def all_zero_samples(nonzero_ratio: np.ndarray) -> np.ndarray:
    """(N,) booleans: the samples whose every hooked gradient entry is exactly zero (every
    ``r[l, c]`` is 0). ``nonzero_ratio``: (N, channels of all layers)."""
    ratio = np.asarray(nonzero_ratio, dtype=np.float64)
    return ~(ratio != 0).any(axis=1) if ratio.size else np.zeros(len(ratio), dtype=bool)


def mean_exact_zero_fraction(nonzero_ratio: np.ndarray, channel_counts: Sequence[int]) -> float | None:
    """The mean of :func:`exact_zero_fraction` over the samples whose gradients are not all
    zero (those are a different case: :func:`all_zero_note`); None when every sample's are."""
    ratio = np.asarray(nonzero_ratio, dtype=np.float64)
    keep = ~all_zero_samples(ratio)
    return float(exact_zero_fraction(ratio[keep], channel_counts).mean()) if keep.any() else None


def all_zero_note(count: int, total: int, where: str | None = None) -> str:
    """The warning for GAIA-Z numbers whose gradients are all exactly zero (one line)."""
    scope = f" for {count} of {total} images" + (f" ({where})" if where else "")
    return (f"{ALL_ZERO_NOTE}{scope} (the model's output does not depend on these layers for this input: "
            "every path from them to the maximum logit is cut, e.g. by ReLUs that are all inactive or a head "
            "with zero weights): every non-zero ratio r is 0, so GAIA-Z is 0 there and says nothing about "
            "the input. This is the opposite of a model without exact zeros (smooth activations).")


def exact_zero_fraction(nonzero_ratio: np.ndarray, channel_counts: Sequence[int]) -> np.ndarray:
    """Per sample, the mean over the hooked channels of the share of exact zeros a channel
    has beyond its layer's channel with the fewest (see the module docstring).

    ``nonzero_ratio``: (N, sum of channel_counts), every ``r[l, c]`` layer by layer;
    returns (N,) in [0, 1].
    """
    zero_ratio = 1.0 - np.asarray(nonzero_ratio, dtype=np.float64)
    if zero_ratio.ndim != 2 or zero_ratio.shape[1] != int(np.sum(channel_counts)):
        raise ValueError(f"nonzero_ratio of shape {zero_ratio.shape} does not match "
                         f"{int(np.sum(channel_counts))} channels")
    excess = []
    start = 0
    for count in channel_counts:
        block = zero_ratio[:, start:start + int(count)]
        excess.append(block - block.min(axis=1, keepdims=True))
        start += int(count)
    return np.concatenate(excess, axis=1).mean(axis=1)


def lacks_exact_zeros(fraction: float) -> bool:
    """True when ``fraction`` (a mean of :func:`exact_zero_fraction`) is below the threshold."""
    return bool(fraction < EXACT_ZERO_THRESHOLD)


def _is_activation(module: nn.Module) -> bool:
    cls = type(module)
    if cls.__name__ in _NOT_ACTIVATIONS:
        return False
    return cls.__module__ == "torch.nn.modules.activation" or "activation" in cls.__module__.rsplit(".", 1)[-1]


def activation_kinds(model: nn.Module) -> list[str]:
    """The activation modules of ``model`` as ``"SiLU (49)"``, most frequent first
    (activations applied as functions, ``F.relu``, are not modules and not listed)."""
    counts = Counter(type(m).__name__ for m in model.modules() if _is_activation(m))
    return [f"{name} ({count})" for name, count in counts.most_common()]


def no_exact_zeros_note(fraction: float, activations: Sequence[str], where: str | None = None) -> str:
    """The warning for GAIA-Z numbers computed without exact zeros (one line)."""
    found = ", ".join(activations) if activations else "none as modules (applied as functions?)"
    smooth = [a for a in activations if a.split(" (")[0] not in ZERO_SLOPE_ACTIVATIONS]
    kind = (f"this model's {', '.join(a.split(' (')[0] for a in smooth)} never have an exactly zero "
            "slope" if smooth else "the hooked layers' gradients do not pass through such an activation")
    scope = f" on {where}" if where else ""
    if smooth:
        scope = f" (smooth activations){scope}"
    return (f"{NO_EXACT_ZEROS_NOTE}{scope} ({100 * fraction:.2f} % of gradient entries per channel "
            f"are exactly zero, below {100 * EXACT_ZERO_THRESHOLD:.0f} %): GAIA-Z counts the zeros that "
            f"piecewise-linear activations such as ReLU produce, and {kind}; activations found in the "
            f"model: {found}. Every non-zero ratio is about 1, so GAIA-Z says nothing about the input "
            "here: use GAIA-A or another method for this model.")


def warn_no_exact_zeros(note: str, stacklevel: int = 3) -> None:
    warnings.warn(note, NoExactZerosWarning, stacklevel=stacklevel)


__all__ = ["ALL_ZERO_NOTE", "EXACT_ZERO_THRESHOLD", "NO_EXACT_ZEROS_NOTE", "NoExactZerosWarning",
           "ZeroGradientWarning", "activation_kinds", "all_zero_note", "all_zero_samples", "exact_zero_fraction",
           "lacks_exact_zeros", "mean_exact_zero_fraction", "no_exact_zeros_note", "warn_no_exact_zeros"]
