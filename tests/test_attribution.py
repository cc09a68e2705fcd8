"""Captum attributions against direct autograd formulas, and the model left as found."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from gaia_viz.attribution import (
    ATTRIBUTION_METHODS,
    attribute,
    occlusion_window,
    to_heatmap,
    top_k_predictions,
)


def small_cnn(num_classes: int = 4) -> nn.Module:
    """conv-bn-ReLU(inplace)-conv-bn-ReLU(inplace)-GAP-linear, like a tiny ResNet stem."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    ).eval()


def mlp_on_images() -> nn.Module:
    """Flatten - Linear - ReLU(inplace) - Linear: guided backprop is computable by hand."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(inplace=True), nn.Linear(6, 3)).eval()


def input_gradient(model, x, target):
    x = x.clone().requires_grad_()
    logits = model(x)
    logits[torch.arange(len(x)), target].sum().backward()
    return x.grad


def model_state(model):
    return dict(
        modes=[m.training for m in model.modules()],
        requires_grad=[p.requires_grad for p in model.parameters()],
        inplace=[m.inplace for m in model.modules() if isinstance(m, nn.ReLU)],
        hooks=sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                  + len(m._backward_pre_hooks) for m in model.modules()),
        grads=[p.grad for p in model.parameters()],
    )


@pytest.fixture
def batch():
    torch.manual_seed(2)
    return torch.randn(3, 3, 12, 12)


def test_saliency_is_absolute_input_gradient(batch):
    model = small_cnn()
    target = torch.tensor([0, 1, 3])
    expected = input_gradient(model, batch, target).abs()
    got = attribute(model, batch, "saliency", target=target)
    assert got.shape == batch.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_input_x_gradient_is_input_times_gradient(batch):
    model = small_cnn()
    target = torch.tensor([2, 2, 0])
    expected = batch * input_gradient(model, batch, target)
    torch.testing.assert_close(attribute(model, batch, "input_x_gradient", target=target),
                               expected, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_completeness(batch):
    """sum of attributions ~= f_t(x) - f_t(0) (the zero baseline)."""
    model = small_cnn()
    target = torch.tensor([1, 0, 2])
    attr = attribute(model, batch, "integrated_gradients", target=target, n_steps=64,
                     internal_batch_size=64)
    with torch.no_grad():
        rows = torch.arange(len(batch))
        gap = model(batch)[rows, target] - model(torch.zeros_like(batch))[rows, target]
    np.testing.assert_allclose(attr.sum(dim=(1, 2, 3)).numpy(), gap.numpy(), rtol=0.02, atol=2e-3)


def test_guided_backprop_matches_hand_computation():
    """Guided gradient of W2 relu(W1 x): W1^T relu(mask * W2[t]), mask = (W1 x > 0)."""
    model = mlp_on_images()
    x = torch.randn(2, 3, 2, 2)
    target = torch.tensor([0, 2])
    first, second = model[1], model[3]
    with torch.no_grad():
        mask = (first(x.flatten(1)) > 0).float()
        backward = torch.relu(mask * second.weight[target])
        expected = (backward @ first.weight).reshape(x.shape)
    torch.testing.assert_close(attribute(model, x, "guided_backprop", target=target), expected)
    assert model[2].inplace  # switched off only during the call


def test_occlusion_of_linear_model_with_unit_window_is_weight_times_input():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).eval()
    x = torch.randn(2, 3, 4, 4)
    target = torch.tensor([4, 1])
    attr = attribute(model, x, "occlusion", target=target, window=1, stride=1)
    # a 1x1 window spans all channels: each pixel gets the summed drop of its channels
    per_pixel = (model[1].weight[target].reshape(2, 3, 4, 4) * x).sum(dim=1, keepdim=True)
    torch.testing.assert_close(attr, per_pixel.expand_as(x).detach(), rtol=1e-5, atol=1e-6)


def test_occlusion_window_defaults_to_a_quarter_of_the_side():
    assert occlusion_window(28, 28) == (7, 3)
    assert occlusion_window(224, 200) == (50, 25)
    assert occlusion_window(4, 4, window=1, stride=1) == (1, 1)
    with pytest.raises(ValueError):
        occlusion_window(8, 8, window=9)


def test_smoothgrad_with_tiny_noise_is_saliency(batch):
    model = small_cnn()
    smooth = attribute(model, batch, "smoothgrad", nt_samples=4, stdevs=1e-6)
    torch.testing.assert_close(smooth, attribute(model, batch, "saliency"), rtol=1e-3, atol=1e-6)
    assert (attribute(model, batch, "smoothgrad", nt_samples=4) >= 0).all()


def test_grad_cam_defaults_to_gaia_head_layer_and_input_size(batch):
    model = small_cnn()
    cam = attribute(model, batch, "grad_cam")
    assert cam.shape == (3, 1, 12, 12)
    assert (cam >= 0).all()
    explicit = attribute(model, batch, "grad_cam", layer="5")  # the last ReLU = GAIA head
    torch.testing.assert_close(cam, explicit)


def test_default_target_is_predicted_class(batch):
    model = small_cnn()
    predicted = model(batch).argmax(1)
    torch.testing.assert_close(attribute(model, batch, "input_x_gradient"),
                               attribute(model, batch, "input_x_gradient", target=predicted))
    single = attribute(model, batch[0], "saliency")  # one (C, H, W) image
    assert single.shape == (1, 3, 12, 12)


@pytest.mark.parametrize("method", list(ATTRIBUTION_METHODS))
def test_every_method_leaves_a_torchvision_resnet_as_found(method):
    """In-place ReLUs, train mode, frozen and trainable params, no hooks, no param grads."""
    torch.manual_seed(4)
    model = torchvision.models.resnet18(num_classes=5)
    model.train()
    model.layer1.requires_grad_(False)
    before = model_state(model)
    params = dict(n_steps=4) if method == "integrated_gradients" else {}
    params = dict(nt_samples=2) if method == "smoothgrad" else params
    attr = attribute(model, torch.randn(1, 3, 32, 32), method, **params)
    assert attr.shape[2:] == (32, 32) and torch.isfinite(attr).all()
    after = model_state(model)
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["inplace"] == before["inplace"] and all(after["inplace"])
    assert after["hooks"] == 0
    assert all(g is None for g in after["grads"])


class TupleOutput(nn.Module):
    """``small_cnn`` returning ``(logits, features)``, as torchvision's Inception does in train
    mode and many research models do; ``as_dict``: ``{"logits": ..., "features": ...}``."""

    def __init__(self, as_dict: bool = False):
        super().__init__()
        self.net, self.as_dict = small_cnn(), as_dict

    def forward(self, x):
        logits = self.net(x)
        return {"logits": logits, "features": x.mean((2, 3))} if self.as_dict else (logits, x.mean((2, 3)))


@pytest.mark.parametrize("method", list(ATTRIBUTION_METHODS))
def test_a_model_returning_a_tuple_or_a_dict_is_attributed_as_its_logits(batch, method):
    """Was: Captum indexed the tuple by class and failed (every other forward pass of gaia_viz
    reads the logits with gaia_viz.model_output.model_logits)."""
    params = dict(n_steps=4) if method == "integrated_gradients" else {}
    params = dict(nt_samples=2) if method == "smoothgrad" else params
    plain = TupleOutput().net
    torch.manual_seed(0)  # SmoothGrad's noise
    expected = attribute(plain, batch, method, target=1, **params)
    layer = dict(layer="5") if method == "grad_cam" else {}
    for wrapped in (TupleOutput(), TupleOutput(as_dict=True)):
        torch.manual_seed(0)
        got = attribute(wrapped, batch, method, target=1, **params)
        if method == "grad_cam":  # named as in the user's model: net.5 there
            torch.testing.assert_close(attribute(wrapped, batch, method, target=1, layer="net.5"),
                                       attribute(plain, batch, method, target=1, **layer))
        torch.testing.assert_close(got, expected)
        assert model_state(wrapped)["hooks"] == 0
    assert top_k_predictions(TupleOutput(), batch[0], k=2) == top_k_predictions(plain, batch[0], k=2)
    torch.testing.assert_close(attribute(TupleOutput(), batch, "saliency"), attribute(plain, batch, "saliency"))


def test_state_restored_when_the_method_fails(batch):
    model = small_cnn().train()
    with pytest.raises(Exception):
        attribute(model, batch, "grad_cam", layer="no_such_layer")
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert model[2].inplace


def test_unknown_method_and_parameter_are_refused(batch):
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribute(small_cnn(), batch, "lime")
    with pytest.raises(ValueError, match="takes no parameter"):
        attribute(small_cnn(), batch, "saliency", n_steps=3)


def test_to_heatmap_sums_channels_and_clips_at_percentile():
    attr = np.zeros((3, 10, 10))
    attr[0, 0, 0] = -1000.0  # one extreme pixel must not wash out the rest
    attr[:, 1:, :] = -1.0
    heat = to_heatmap(torch.as_tensor(attr)[None], percentile=95)
    assert heat.shape == (10, 10)
    assert heat.min() >= 0 and heat.max() == 1.0
    assert heat[0, 0] == 1.0 and heat[5, 5] == 1.0  # |-1| * 3 channels = the 95th percentile
    assert heat[0, 1] == 0.0
    assert not to_heatmap(np.zeros((4, 4))).any()
    with pytest.raises(ValueError):
        to_heatmap(np.zeros((2, 3, 4, 4)))


def test_top_k_predictions_are_sorted_probabilities(batch):
    model = small_cnn(num_classes=4)
    top = top_k_predictions(model, batch[0], k=10, class_names=["a", "b", "c", "d"])
    assert len(top) == 4  # k is capped at the number of classes
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-5
    expected = torch.softmax(model(batch[:1]), 1)[0].argmax().item()
    assert top[0][0] == "abcd"[expected]
    assert [label for label, _ in top_k_predictions(model, batch[:1], k=2)][0] == str(expected)
    with pytest.raises(ValueError):
        top_k_predictions(model, batch, k=2)


def test_baselines_black_in_pixel_space_mean_blur_and_seeded_noise():
    from gaia_viz.attribution import baseline_image
    from gaia_viz.data.presets import get_preset, make_transform
    from PIL import Image

    preset = get_preset("gaia-cifar10")
    black_pixels = make_transform(preset)(Image.new("RGB", (32, 32)))[None]
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(baseline_image(x, "black", preset), black_pixels.expand_as(x))
    assert baseline_image(x, "black").abs().sum() == 0  # no preset: x is in pixel units already
    assert baseline_image(x, "mean").abs().sum() == 0  # zero after normalisation = the mean colour
    noise = baseline_image(x, "noise", preset, seed=3)
    torch.testing.assert_close(noise, baseline_image(x, "noise", preset, seed=3))
    assert not torch.equal(noise, baseline_image(x, "noise", preset, seed=4))
    pixels = noise * torch.tensor(preset.std).view(1, 3, 1, 1) + torch.tensor(preset.mean).view(1, 3, 1, 1)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6  # uniform in pixel space
    flat = torch.full((1, 3, 8, 8), 0.7)
    torch.testing.assert_close(baseline_image(flat, "blur"), flat)  # blurring a flat image keeps it
    smooth = baseline_image(x, "blur")
    assert smooth.std() < x.std() / 2
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_image(x, "grey")
    with pytest.raises(ValueError, match="channel"):
        baseline_image(torch.zeros(1, 1, 4, 4), "black", preset)


def test_integrated_gradients_from_black_gives_black_pixels_nothing():
    """The point of the pixel-space black baseline: a digit's black background is not evidence."""
    from gaia_viz.attribution import baseline_image

    model = small_cnn()
    preset = "gaia-cifar10"
    x = torch.randn(1, 3, 12, 12)
    black = baseline_image(x, "black", preset)
    x[..., :4, :] = black[..., :4, :]  # the top rows are black pixels
    attr = attribute(model, x, "integrated_gradients", n_steps=32, preset=preset)
    assert attr[..., :4, :].abs().max() == 0
    with torch.no_grad():
        gap = model(x)[0, model(x).argmax()] - model(black)[0, model(x).argmax()]
    assert attr.sum().item() == pytest.approx(gap.item(), rel=0.05, abs=2e-3)  # completeness from black
    from_mean = attribute(model, x, "integrated_gradients", n_steps=32, baseline="mean")
    assert from_mean[..., :4, :].abs().max() > 0  # the old zero baseline attributes to them
    blurred = attribute(model, x, "integrated_gradients", n_steps=8, baseline="blur")
    noisy = attribute(model, x, "integrated_gradients", n_steps=8, baseline="noise", preset=preset, seed=1)
    assert torch.isfinite(blurred).all() and torch.isfinite(noisy).all()
    occluded = attribute(model, x, "occlusion", window=4, stride=4, preset=preset)
    assert occluded[..., :4, :].abs().max() < 1e-6  # replacing black by black changes nothing (up to rounding)


def test_signed_heatmap_keeps_the_sign_and_is_symmetric():
    attr = np.zeros((3, 4, 4))
    attr[:, 0, 0] = 1.0  # +3 summed
    attr[:, 1, 1] = -2.0  # -6 summed
    signed = to_heatmap(torch.as_tensor(attr), percentile=100, signed=True)
    assert signed[1, 1] == -1.0 and signed[0, 0] == pytest.approx(0.5) and signed[2, 2] == 0
    magnitude = to_heatmap(torch.as_tensor(attr), percentile=100)
    assert magnitude[1, 1] == 1.0 and magnitude[0, 0] == pytest.approx(0.5)
    assert not to_heatmap(np.zeros((4, 4)), signed=True).any()


def test_signed_flags_match_what_each_method_can_return():
    assert {k for k, m in ATTRIBUTION_METHODS.items() if m.signed} == {
        "integrated_gradients", "input_x_gradient", "guided_backprop", "occlusion"}
