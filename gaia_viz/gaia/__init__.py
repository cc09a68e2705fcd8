"""GAIA: gradient-based attribution abnormality (Chen et al., NeurIPS 2023).

Two scores, both *higher = more out-of-distribution* (the paper's code negates them so
that ID ranks high; we return the raw value). Their formulas are written out here, once;
the detectors, the integrations and the partial sums (``r``, ``m``, ``o`` below) refer to them:

GAIA-Z (zero-deflation abnormality). Objective ``sum_b max_k f(x_b)_k``. For every hooked
layer ``l`` take ``g = d objective / d output_l`` and for each channel ``c``

    r[l, c] = #{spatial positions p : g[c, p] != 0} / #positions        (exact zeros)
    GAIA-Z  = mean over all hooked channels (l, c) of r[l, c]^2

GAIA-A (channel-wise average abnormality). One forward, two vector-Jacobian products:

    A = sum_b sum_k log_softmax(f(x_b))_k,  G = dA / d output_head,  a[c] = mean_p G[c, p]
    o = sqrt(mean_c |a[c]|)                                              (output component)
    B = sum of the pooled feature vector fed to the classifier head
    m[l, c] = mean_p (dB / d output_l)[c, p]  for every inner layer l
    GAIA-A  = mean over all inner channels (l, c) of (|m[l, c]| / o)^2

"The gradient at a layer" is the gradient with respect to the layer's output as the next
module receives it; for a norm fused with its activation (timm's ``BatchNormAct2d``, ...) it
is the gradient with respect to the normalised tensor before the activation, so a fused
model scores exactly like the same model unfused. GAIA-Z needs exact zeros in these
gradients (ReLU-like activations); without them a warning says so (:mod:`~gaia_viz.gaia.zeros`).
Token models (ViT, DeiT, Swin) are refused with a LayerError that says why. A model that applies an in-place op to that output (torchvision
ResNets: ``bn -> ReLU(inplace=True)``, ``bn3 += identity``) is handled by handing the next
module a copy, so it scores exactly like the same model with ``inplace=False``.

Engineering guarantees of every public function here:
- one forward pass per call; gradients with respect to activations only (parameters are
  frozen for the call, so no parameter gradient is ever computed);
- the backward pass stops at the earliest hooked layer (its output becomes the graph's leaf),
  reduces every other layer's gradient the moment it is produced, and takes eval-mode batch
  norms (with the convolution before them) in one cheaper step
  (:class:`~gaia_viz.gaia.autograd.EvalNormBackward`);
- hooks removed, ``requires_grad`` flags and train/eval modes restored, also on exceptions;
- batched: no Python loop over samples; a sample's scores do not depend on its batch.

Modules: :mod:`~gaia_viz.gaia.layout` (feature layers, default layers),
:mod:`~gaia_viz.gaia.autograd` (the hooked forward and reduced backward),
:mod:`~gaia_viz.gaia.scores` (results and scores), :mod:`~gaia_viz.gaia.maps` (for display).
"""

from gaia_viz.gaia.layout import NORM_TYPES, GaiaLayerDefaults, LayerInfo, ModelLayout, model_layout
from gaia_viz.gaia.maps import OBJECTIVES, default_layers, describe_layers, layer_gradients, spatial_maps
from gaia_viz.gaia.scores import (
    GaiaResult,
    gaia_a,
    gaia_a_from_partials,
    gaia_analyze,
    gaia_z,
    gaia_z_from_partials,
)
from gaia_viz.gaia.zeros import EXACT_ZERO_THRESHOLD, NoExactZerosWarning, exact_zero_fraction

__all__ = [
    "EXACT_ZERO_THRESHOLD", "GaiaLayerDefaults", "GaiaResult", "LayerInfo", "NoExactZerosWarning",
    "exact_zero_fraction", "ModelLayout", "NORM_TYPES", "OBJECTIVES", "default_layers",
    "describe_layers", "gaia_a", "gaia_a_from_partials", "gaia_analyze", "gaia_z",
    "gaia_z_from_partials", "layer_gradients", "model_layout", "spatial_maps",
]
