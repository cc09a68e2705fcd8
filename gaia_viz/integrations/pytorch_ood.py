"""GAIA-Z and GAIA-A as pytorch-ood detectors (pytorch-ood 0.4.0's ``Detector`` API).

::

    from pytorch_ood.metrics import OODMetrics
    from gaia_viz.integrations.pytorch_ood import GAIAZ

    detector = GAIAZ(model)                 # fit(loader) is a no-op: GAIA fits nothing
    metrics = OODMetrics()
    for x, y in loader:                     # y < 0 marks OOD samples (ToUnknown)
        metrics.update(detector(x), y)
    print(metrics.compute())

Both detectors compute with :mod:`gaia_viz.gaia` (the same code the explorer's sweep runs,
so the scores equal the sweep's) and subclass ``pytorch_ood.api.GradientDetector``: they
need gradients through the model, so pytorch-ood's benchmarks run them on raw inputs and
never on cached features. Scores are OOD-high, pytorch-ood's convention and ours.

The model is used in eval mode during a call and left as found: hooks removed,
``requires_grad`` flags and each module's train/eval mode restored, no parameter gradient
computed. A ``torch.no_grad()`` or ``torch.inference_mode()`` around the call is fine: GAIA
enables the gradients it needs inside.

Needs ``pip install pytorch-ood==0.4.0 --no-deps`` (``--no-deps``: it leaves the installed
torch alone).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from gaia_viz.integrations import missing_package_error

try:
    from pytorch_ood.api import DetectorInfo, GradientDetector, ModelNotSetException, Paper, Task
except ImportError as error:  # one error that says what to install, not a chain of two
    raise missing_package_error(__name__, "pytorch-ood", "pip install pytorch-ood==0.4.0 --no-deps",
                                error) from None

from gaia_viz.gaia import gaia_a, gaia_z

GAIA_PAPER = Paper(
    title="GAIA: Delving into Gradient-based Attribution Abnormality for Out-of-distribution Detection",
    venue="NeurIPS",
    year=2023,
    url="https://arxiv.org/abs/2311.09620",
    code="https://github.com/JGEthanChen/GAIA-OOD",
)

FEATURES_REFUSAL = (
    "{name} scores inputs, not features: it needs the gradients of the model's output with "
    "respect to its inner layers, which features already computed no longer carry; call "
    "predict(x) (or detector(x)) on the input batch instead"
)


def _names(layers: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if layers is None:
        return None
    return (layers,) if isinstance(layers, str) else tuple(layers)


def _on_device_of(scores: Tensor, x: Tensor) -> Tensor:
    """The per-sample scores (float64, from :mod:`gaia_viz.gaia`) on the input's device, so
    that ``metrics.update(detector(x), y)`` finds scores and labels together."""
    if isinstance(x, Tensor) and x.device != scores.device:
        return scores.to(device=x.device, dtype=torch.float32 if x.device.type == "mps" else scores.dtype)
    return scores


class _GaiaDetector(GradientDetector):
    """What GAIA-Z and GAIA-A share: a model, no fit, no features entry point."""

    requires_fit = False

    def __init__(self, model: nn.Module):
        if model is None:
            raise ModelNotSetException(f"{type(self).__name__} needs the model: it scores inputs "
                                       "by the model's gradients")
        self.model = model

    def fit(self, data_loader=None, **kwargs):
        """Does nothing and returns ``self``: GAIA is post hoc and fits nothing (like
        pytorch-ood's ``EnergyBased`` or ``GradNorm``); the argument is accepted and unused."""
        return self

    def fit_features(self, *args, **kwargs):
        """Does nothing and returns ``self``: GAIA fits nothing (see :meth:`fit`)."""
        return self

    def predict_features(self, *args, **kwargs) -> Tensor:
        """Not available: raises ``NotImplementedError`` saying why (see the message)."""
        raise NotImplementedError(FEATURES_REFUSAL.format(name=type(self).__name__))


class GAIAZ(_GaiaDetector):
    """GAIA-Z, the zero-deflation abnormality of *GAIA: Delving into Gradient-based
    Attribution Abnormality for Out-of-distribution Detection* (Chen et al., NeurIPS 2023).

    The score is the mean, over the channels of the hooked layers, of the squared fraction of
    a channel's positions where the max-logit gradient is not exactly zero (the formula:
    :mod:`gaia_viz.gaia`). Larger values indicate OOD (the paper's code negates the score; the
    value is the same). Exact zeros come from ReLU-like activations; with smooth ones (GELU, SiLU) GAIA-Z carries
    no information and :func:`gaia_viz.gaia.gaia_z` warns (``NoExactZerosWarning``).
    Computed by :func:`gaia_viz.gaia.gaia_z`; reference code:
    https://github.com/JGEthanChen/GAIA-OOD
    """

    info = DetectorInfo(paper=GAIA_PAPER, tasks={Task.CLASSIFICATION}, ai_coded=True)

    def __init__(self, model: nn.Module, layers: Sequence[str] | str | None = None):
        """
        :param model: a classifier over image batches :math:`B \\times C \\times H \\times W`
            whose inner layers produce feature maps (convolutional networks; token models are
            refused with a ``LayerError`` that says why)
        :param layers: layers to hook, named as in ``model.named_modules()``; ``None`` is
            GAIA's default, every normalisation layer over feature maps
        """
        super().__init__(model)
        self.layers = _names(layers)

    def predict(self, x: Tensor) -> Tensor:
        """
        :param x: input batch :math:`B \\times C \\times H \\times W`, moved to the model's device
        :return: GAIA-Z scores of shape :math:`B` (float64), on ``x``'s device; larger = more OOD
        """
        if self.model is None:
            raise ModelNotSetException()
        return _on_device_of(gaia_z(self.model, x, layers=self.layers), x)


class GAIAA(_GaiaDetector):
    """GAIA-A, the channel-wise average abnormality of *GAIA* (Chen et al., NeurIPS 2023).

    The score compares the channel averages of the gradients at the inner layers with the
    output component read at the head layer, the map the global pooling reads (the formula:
    :mod:`gaia_viz.gaia`). Larger values indicate OOD. Computed by
    :func:`gaia_viz.gaia.gaia_a`; reference code: https://github.com/JGEthanChen/GAIA-OOD
    """

    info = DetectorInfo(paper=GAIA_PAPER, tasks={Task.CLASSIFICATION}, ai_coded=True)

    def __init__(self, model: nn.Module, inner_layers: Sequence[str] | str | None = None,
                 head_layer: str | None = None):
        """
        :param model: a classifier over image batches, as for :class:`GAIAZ`
        :param inner_layers: layers :math:`l`, named as in ``model.named_modules()``; ``None``
            is GAIA's default, the normalisation layers of the last two stages
        :param head_layer: the feature map the global pooling reads; ``None`` finds it
        """
        super().__init__(model)
        self.inner_layers = _names(inner_layers)
        self.head_layer = head_layer

    def predict(self, x: Tensor) -> Tensor:
        """
        :param x: input batch :math:`B \\times C \\times H \\times W`, moved to the model's device
        :return: GAIA-A scores of shape :math:`B` (float64), on ``x``'s device; larger = more OOD
        """
        if self.model is None:
            raise ModelNotSetException()
        return _on_device_of(gaia_a(self.model, x, inner_layers=self.inner_layers,
                                    head_layer=self.head_layer), x)


__all__ = ["GAIAA", "GAIAZ", "GAIA_PAPER"]
