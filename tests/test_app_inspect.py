"""The Inspect and How-GAIA pages: their helpers directly, the pages through Streamlit's AppTest."""

import io
import struct
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gaia_viz import gaia
from gaia_viz.app.selection import Selection
from gaia_viz.app.teaching import illustrating_channels, layer_shares, walkthrough
from gaia_viz.app.uploads import image_from_upload, model_view_pixels, upload_policy
from gaia_viz.app.verdict import (
    analyze_like_evaluation,
    channel_stats,
    current_threshold,
    decide,
    image_channel_values,
    ood_channel_mean,
)
from gaia_viz.demo import DEMO_CHECKPOINT, DemoCNN
from gaia_viz.errors import ImageLoadError, LayerError

from apptest_support import TIMEOUT, settle
from support import ROOT as REPO


def png_bytes(size=(40, 30), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_png() -> bytes:
    """A white '7'-like stroke on black, 28x28, as a PNG file."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[5:8, 6:22] = 255
    for row in range(8, 24):
        pixels[row, 20 - (row - 8) // 2: 23 - (row - 8) // 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()[:400]


def bomb_png() -> bytes:
    """A PNG whose header claims 50,000 x 50,000 pixels (a few bytes of data): it must be
    refused before any pixel is decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def random_demo_cnn():
    torch.manual_seed(0)
    return DemoCNN().eval()


def fake_evaluation():
    """Two GAIA-Z layers (2 and 3 channels), one GAIA-A inner layer (2 channels)."""
    rng = np.random.default_rng(0)
    arrays = {name: {"nonzero_ratio": rng.random((n, 5)), "channel_mean_grad": rng.normal(size=(n, 2))}
              for name, n in (("digits", 40), ("faces", 10), ("noise", 20))}
    return SimpleNamespace(zero_layers=["bn1", "bn2"], zero_channels=[2, 3], inner_layers=["bn2"],
                           inner_channels=[2], arrays=arrays, id_name="digits",
                           ood_names=["faces", "noise"], methods=["gaia_z", "gaia_a"],
                           head_layer="relu2")


# ----------------------------------------------------------------------------- helpers


def test_layer_columns_split_concatenated_channels():
    from gaia_viz.gaia.families import family

    evaluation = SimpleNamespace(zero_layers=["a", "b", "c"], zero_channels=[2, 3, 4])
    assert family("gaia_z").channel_columns(evaluation, "a") == slice(0, 2)
    assert family("gaia_z").channel_columns(evaluation, "c") == slice(5, 9)
    with pytest.raises(LayerError, match="not part of this evaluation"):
        family("gaia_z").channel_columns(SimpleNamespace(zero_layers=["a"], zero_channels=[2]), "z")


def test_channel_stats_are_per_channel_mean_and_std_of_that_layer():
    evaluation = fake_evaluation()
    mean, std = channel_stats(evaluation, "digits", "gaia_z", "bn2")
    values = evaluation.arrays["digits"]["nonzero_ratio"][:, 2:5]
    np.testing.assert_allclose(mean, values.mean(0))
    np.testing.assert_allclose(std, values.std(0))
    inner_mean, _ = channel_stats(evaluation, "digits", "gaia_a", "bn2")
    np.testing.assert_allclose(inner_mean, evaluation.arrays["digits"]["channel_mean_grad"].mean(0))
    pooled = np.concatenate([evaluation.arrays[n]["nonzero_ratio"][:, :2] for n in ("faces", "noise")])
    np.testing.assert_allclose(ood_channel_mean(evaluation, "gaia_z", "bn1"), pooled.mean(0))


def test_threshold_from_tune_page_only_for_its_method():
    id_scores = np.arange(1, 101, dtype=float)  # 95 % of ID accepted at 95
    tuned = Selection(method="gaia_z", ood_set="faces", threshold_mode="score", threshold=42.0)
    assert current_threshold(tuned, "gaia_z", id_scores) == (42.0, "as on the Tune threshold page")
    by_tpr = Selection(method="gaia_z", threshold_mode="tpr", tpr=0.5)
    assert current_threshold(by_tpr, "gaia_z", id_scores)[0] == 50.0
    threshold, source = current_threshold(tuned, "gaia_a", id_scores)
    assert threshold == 95.0 and "95%" in source
    assert current_threshold(None, "gaia_z", id_scores)[0] == 95.0


def test_decision_text_says_verdict_threshold_and_direction():
    id_scores = np.arange(1, 101, dtype=float)
    ood = decide(96.0, "gaia_z", id_scores)
    assert ood.is_ood and ood.text.startswith("OOD at threshold 95 (GAIA-Z, higher = more OOD")
    same = decide(95.0, "gaia_a", id_scores)  # equal to the threshold is accepted as ID
    assert not same.is_ood and same.text.startswith("ID at threshold 95 (GAIA-A")


def test_image_from_upload_applies_the_preset():
    image, x = image_from_upload(png_bytes(), "red.png", "demo-mnist28", "resize")
    assert image.mode == "RGB" and image.size == (40, 30)
    assert x.shape == (1, 28, 28)
    _, x_rgb = image_from_upload(png_bytes(), "red.png", "gaia-cifar10", "center-crop")
    assert x_rgb.shape == (3, 32, 32)


@pytest.mark.parametrize("data, phrase", [
    (b"just some text, not pixels", "not a recognised image format"),
    (truncated_jpeg(), "truncated"),
    (bomb_png(), "decompression bomb"),
])
def test_bad_uploads_raise_image_load_error_naming_the_file(data, phrase):
    with pytest.raises(ImageLoadError, match=phrase) as info:
        image_from_upload(data, "holiday.png", "demo-mnist28", "resize")
    assert "holiday.png" in str(info.value)


def test_model_view_pixels_undo_the_normalisation():
    _, x = image_from_upload(png_bytes(color=(255, 255, 255)), "white.png", "demo-mnist28", "resize")
    pixels = model_view_pixels(x, "demo-mnist28")
    assert pixels.shape == (28, 28, 3) and pixels.dtype == np.uint8
    assert (pixels == 255).all()


def test_upload_policy_follows_the_setup_unless_both():
    assert upload_policy("resize") == "resize"
    assert upload_policy("both", "resize") == "resize"
    assert upload_policy("both") in ("center-crop", "resize")


def test_walkthrough_numbers_agree_with_gaia(random_demo_cnn):
    x = torch.randn(1, 28, 28)
    walk = walkthrough(random_demo_cnn, x)
    assert walk.layer == walk.result.inner_layers[-1]
    np.testing.assert_allclose(walk.ratio, walk.result.nonzero_ratio[walk.layer][0].numpy(), atol=1e-6)
    np.testing.assert_allclose(walk.channel_mean, walk.result.channel_mean_grad[walk.layer][0].numpy(),
                               rtol=1e-5, atol=1e-9)
    assert walk.output_component == pytest.approx(np.sqrt(np.abs(walk.head_channel_mean).mean()), rel=1e-5)
    assert walk.gaia_z == pytest.approx(float(gaia.gaia_z(random_demo_cnn, x[None])[0]), rel=1e-6)
    total = float(walk.result.zero_partial_sums[0].sum())
    assert walk.gaia_z == pytest.approx(total / walk.total_zero_channels)
    assert walk.mean_squared_ratio_here == pytest.approx(float(np.mean(walk.ratio ** 2)))


def test_analyze_like_evaluation_uses_the_evaluation_layers(random_demo_cnn):
    evaluation = SimpleNamespace(methods=["gaia_z"], zero_layers=["bn2"], inner_layers=[], head_layer=None)
    result = analyze_like_evaluation(random_demo_cnn, torch.randn(1, 28, 28), evaluation)
    assert result.zero_layers == ["bn2"] and result.inner_layers == []
    values = image_channel_values(result, "gaia_z", "bn2")
    assert values.shape == (64,)


def test_illustrating_channels_agree_with_the_layer_average():
    """Was: the 3 'most different' channels had the OOD image with fewer non-zeros although its
    GAIA-Z was higher."""
    digit = np.array([0.5, 0.1, 0.1, 0.9, 0.2])
    face = np.array([0.0, 0.6, 0.4, 0.9, 0.3])  # higher mean r^2, far fewer non-zeros in channel 0
    picked = illustrating_channels(digit, face, count=3)
    assert picked.direction == 1 and picked.channels == [1, 2, 4]  # channel 0 differs most but disagrees
    assert picked.second_mean == pytest.approx(np.mean(face ** 2))
    how = picked.describe("the digit", "the face")
    assert "the face has the higher mean r²" in how and f"{np.mean(face ** 2):.3f}" in how
    assert illustrating_channels(face, digit, count=2).channels == [1, 2]  # the other way round
    assert illustrating_channels(digit, digit + np.array([0.1, 0, 0, 0, 0]), count=3).channels == [0]
    same = illustrating_channels(np.array([0.2, 0.4]), np.array([0.4, 0.2]), count=1)
    assert same.direction == 0 and len(same.channels) == 1 and "same mean" in same.describe()
    # the aggregate is GAIA-Z's mean of r^2, not the mean of r: equal shares, different squares
    spread = illustrating_channels(np.array([0.5, 0.5]), np.array([1.0, 0.0]), count=2)
    assert spread.direction == 1 and spread.channels == [0]


def test_layer_shares_are_channel_means_per_layer(random_demo_cnn):
    x = torch.randn(1, 1, 28, 28)
    result = gaia.gaia_analyze(random_demo_cnn, x)
    shares, squares = layer_shares(result)
    assert len(shares) == len(squares) == len(result.zero_layers)
    assert shares[0] == pytest.approx(float(result.nonzero_ratio[result.zero_layers[0]][0].mean()))
    assert all(0 <= q <= s <= 1 for s, q in zip(shares, squares))
    counts = result.zero_channel_counts
    assert np.dot(squares, counts) / counts.sum() == pytest.approx(float(result.gaia_z[0]))  # GAIA-Z, weighted


# ----------------------------------------------------------------------------- pages

needs_demo = pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(),
                                reason=f"demo weights {DEMO_CHECKPOINT} missing: run "
                                       "`python -m gaia_viz.demo.train --out assets/demo_cnn.safetensors`")


@pytest.fixture(scope="module")
def run_cache(tmp_path_factory):
    """A private sweep cache for this module (the app would write ~/.cache/gaia-viz)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("GAIA_VIZ_CACHE_DIR", str(tmp_path_factory.mktemp("sweep-cache")))
    yield
    patch.undo()


def prefixed(widgets, prefix: str):
    return next(w for w in widgets if w.key and w.key.startswith(prefix))


def inspect_page(source: str = "upload"):
    from streamlit.testing.v1 import AppTest

    at = settle(AppTest.from_file(str(REPO / "pages" / "1_Inspect.py"), default_timeout=TIMEOUT).run())
    return prefixed(at.radio, "w_inspect_source::").set_value(source).run()


def texts(at) -> str:
    parts = [e.value for kind in ("markdown", "success", "error", "info", "warning", "latex", "caption")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


@needs_demo
def test_inspect_page_upload_shows_verdict_and_charts(run_cache):
    at = inspect_page()
    assert not at.exception, at.exception
    at.file_uploader(key="inspect_upload").set_value(("seven.png", digit_png(), "image/png"))
    at.run()
    assert not at.exception, at.exception
    verdicts = [e.value for e in [*at.success, *at.error] if "at threshold" in e.value]
    assert len(verdicts) == 2  # GAIA-Z and GAIA-A
    assert any("(GAIA-Z, higher = more OOD" in v for v in verdicts)
    assert all(v.startswith(("**OOD at threshold", "**ID at threshold")) for v in verdicts)
    charts = at.get("plotly_chart")
    assert len(charts) >= 7  # heatmap, overlay, bars, 2 spatial maps, 2 histograms


@needs_demo
def test_inspect_page_bad_uploads_give_errors_not_exceptions(run_cache):
    at = inspect_page()
    at.file_uploader(key="inspect_upload").set_value([
        ("notes.png", b"this is a text file renamed to png", "image/png"),
        ("cut.jpg", truncated_jpeg(), "image/jpeg"),
        ("huge.png", bomb_png(), "image/png"),
    ])
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("notes.png" in e and "not a recognised image format" in e for e in errors)
    assert any("cut.jpg" in e and "truncated" in e for e in errors)
    assert any("huge.png" in e and "decompression bomb" in e for e in errors)
    # the app keeps working: a good image afterwards is inspected
    at.file_uploader(key="inspect_upload").set_value(("seven.png", digit_png(), "image/png"))
    at.run()
    assert not at.exception and at.get("plotly_chart")


@needs_demo
def test_inspect_page_gallery_pick_from_an_ood_set(run_cache):
    at = inspect_page("faces")
    prefixed(at.slider, "w_inspect_index::").set_value(3).run()
    assert not at.exception, at.exception
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert "faces #3, as the model sees it" in captions
    assert {"#3", "#10"} <= set(captions)  # the gallery strip starts at the chosen index
    at.selectbox(key="w_inspect_attribution").set_value("occlusion").run()
    assert not at.exception, at.exception
    assert any("**Occlusion**" in c.value for c in at.caption)


@needs_demo
def test_app_reaches_inspect_with_a_digit_and_how_gaia(run_cache):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    at.switch_page("pages/1_Inspect.py")
    at = settle(at.run())
    assert at.title[0].value == "Inspect one image"
    verdicts = [e.value for e in [*at.success, *at.error] if "at threshold" in e.value]
    assert len(verdicts) == 2  # the first ID digit is inspected without any input
    at.switch_page("pages/5_How_GAIA_works.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "How GAIA works"


@needs_demo
def test_how_gaia_page_shows_formulas_with_numbers(run_cache):
    from streamlit.testing.v1 import AppTest

    at = settle(AppTest.from_file(str(REPO / "pages" / "5_How_GAIA_works.py"), default_timeout=TIMEOUT).run())
    assert not at.exception, at.exception
    formulas = [e.value.strip("$ \n") for e in at.latex]
    assert any(f.startswith(r"r[l, c] = \frac") for f in formulas)
    numbered = [f for f in formulas if "GAIA-Z} =" in f and any(ch.isdigit() for ch in f)]
    assert len(numbered) == 2  # one per image, with numbers plugged in
    assert sum(r"\text{GAIA-A} = \frac" in f for f in formulas) == 2
    assert len(at.get("plotly_chart")) >= 8
    assert "ID image" in texts(at) and "OOD image" in texts(at)
    # "a classifier always answers" under the OOD image only
    answers = [m.value for m in at.markdown if m.value.startswith("The model says")]
    assert len(answers) == 2 and "always answers" not in answers[0] and "always answers" in answers[1]
    # the channels shown agree with the layer's average, and the page says how they were chosen
    how = next(i.value for i in at.info if "channels shown" in i.value)
    assert "agree with that average" in how or "same mean" in how
    shares = chart_spec(at, "how_layer_shares")
    assert [t["type"] for t in shares["data"]] == ["bar", "bar", "scatter", "scatter"] * 2  # share and mean r²
    for key in [c.key for c in at.get("plotly_chart") if c.key.startswith(("grad_", "mask_"))]:
        layout = chart_spec(at, key)["layout"]
        assert all(layout[f"yaxis{s}"]["scaleanchor"] == f"x{s}" for s in ["", *map(str, range(2, 9))])
    import re

    from gaia_viz.app.page import LATEX_STRUT

    assert all(f.endswith(LATEX_STRUT) for f in formulas)  # fractions are not clipped at the top

    def shown_length(formula):  # roughly the characters KaTeX draws on one line
        return len(re.sub(r"\\[a-zA-Z]+|[{}^_ ]", "", formula.replace(LATEX_STRUT, "")))

    assert all(shown_length(f) < 60 for f in formulas), [f for f in formulas if shown_length(f) >= 60]
    at.selectbox(key="how_ood_set").set_value("letters").run()
    at.selectbox(key="how_layer").set_value("bn1").run()  # a GAIA-Z layer outside GAIA-A
    assert not at.exception, at.exception
    assert any(r"r[\text{bn1}" in e.value for e in at.latex)


def test_hardest_case_cards_show_the_model_input_and_the_file(tmp_path):
    """Was: the full-size original was shown, not the 32 x 32 crop the model scored."""
    from gaia_viz.app.gallery import file_caption, model_view
    from gaia_viz.data.image_sets import FileImageSet

    path = tmp_path / "wide_texture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 96, 3), dtype=np.uint8)).save(path)
    images = FileImageSet("textures", [str(path)], preset="gaia-cifar10", ood_policy="center-crop")
    seen = model_view(images, 0, images.preset)
    assert seen.size == (32, 32) and images.raw_image(0).size == (96, 48)
    crop = np.asarray(images.raw_image(0))[8:40, 32:64]  # the centre 32 x 32, as the model saw it
    assert np.abs(np.asarray(seen).astype(int) - crop.astype(int)).max() <= 1
    assert file_caption(images, 0) == "wide_texture.png"


def chart_spec(at, key: str) -> dict:
    import json

    return json.loads(next(c for c in at.get("plotly_chart") if c.key == key).proto.spec)


@needs_demo
def test_inspect_researcher_controls_reach_the_attribution(run_cache):
    from gaia_viz.figures.colors import placeholder_colors

    at = inspect_page("faces")
    at.selectbox(key="w_inspect_attribution").set_value("integrated_gradients").run()
    assert not at.exception, at.exception
    heat = chart_spec(at, "inspect_attribution_heatmap")["data"][0]
    assert heat["zmin"] == -heat["zmax"] and heat["zmid"] == 0  # signed, centred at 0
    assert placeholder_colors(chart_spec(at, "inspect_attribution_heatmap")) == []
    prefixed(at.number_input, "w_inspect_param::").set_value(8).run()  # IG steps
    baseline = next(s for s in at.selectbox if s.key and s.key.endswith("::integrated_gradients::baseline"))
    assert baseline.value == "black"  # black in pixel space by default
    baseline.set_value("blur").run()
    assert not at.exception, at.exception
    chosen = at.session_state["selection"]
    assert chosen.params_for("integrated_gradients") == {"n_steps": 8, "baseline": "blur"}
    prefixed(at.selectbox, "w_inspect_target::").set_value(3).run()
    assert at.session_state["selection"].target == 3
    assert any("for class 3" in c.value for c in at.caption)
    at.radio(key="w_inspect_attr_view").set_value("abs").run()
    assert chart_spec(at, "inspect_attribution_heatmap")["data"][0]["zmin"] == 0  # |value| from 0

    at.selectbox(key="w_inspect_attribution").set_value("grad_cam").run()
    layer = next(s for s in at.selectbox if s.key and s.key.endswith("::grad_cam::layer"))
    assert layer.value in layer.options and len(layer.options) > 2
    layer.set_value(layer.options[0]).run()
    assert not at.exception, at.exception
    assert at.session_state["selection"].params_for("grad_cam") == {"layer": layer.options[0]}
    at.selectbox(key="w_inspect_attribution").set_value("occlusion").run()
    window, stride = (next(n for n in at.number_input if n.key.endswith(f"::occlusion::{p}")) for p in ("window", "stride"))
    assert (window.value, stride.value) == (7, 3)  # a quarter of the 28-pixel side, half of that
    window.set_value(4).run()
    assert at.session_state["selection"].params_for("occlusion") == {"window": 4}
    at.selectbox(key="w_inspect_attribution").set_value("smoothgrad").run()
    noise = next(s for s in at.slider if s.key and s.key.endswith("::smoothgrad::noise_level"))
    samples = next(n for n in at.number_input if n.key.endswith("::smoothgrad::nt_samples"))
    noise.set_value(0.3).run()
    samples.set_value(4).run()
    assert not at.exception, at.exception
    assert at.session_state["selection"].params_for("smoothgrad") == {"noise_level": 0.3, "nt_samples": 4}
    assert at.query_params.get("attr_params").count(":") == 6  # IG x2, Grad-CAM, occlusion, SmoothGrad x2

    at.toggle(key="inspect_all_methods").set_value(True).run()
    assert not at.exception, at.exception
    grid = chart_spec(at, "inspect_all_attributions")
    assert len([t for t in grid["data"] if t["type"] == "heatmap"]) == 7  # every method, side by side
    assert placeholder_colors(grid) == []


@needs_demo
def test_several_uploads_give_a_grid_of_verdicts(run_cache):
    at = inspect_page()
    at.file_uploader(key="inspect_upload").set_value([
        ("seven.png", digit_png(), "image/png"), ("again.png", digit_png(), "image/png"),
        ("third.png", digit_png(), "image/png")])
    at.run()
    assert not at.exception, at.exception
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert {"seven.png", "again.png", "third.png"} <= set(captions)
    verdicts = [m.value for m in at.markdown if m.value.startswith((":green[**ID**]", ":red[**OOD**]"))]
    assert len(verdicts) == 3 * 2  # GAIA-Z and GAIA-A for each image
    assert any("All 3 uploaded images" in h.value for h in at.subheader)


@needs_demo
def test_another_upload_then_another_method_is_no_traceback(run_cache):
    """Was: pick the second of two uploads under "Image to inspect in detail", change the
    attribution method: ``ValueError: invalid literal for int() ... 'predicted (8)'``. The class
    box's first label names the image's predicted class; the browser still sent the first
    image's label, which the page parsed as a class index."""
    at = inspect_page()
    at.file_uploader(key="inspect_upload").set_value([
        ("photo.png", png_bytes((64, 48), (30, 160, 40)), "image/png"), ("seven.png", digit_png(), "image/png")]).run()
    first_label = prefixed(at.selectbox, "w_inspect_target::").options[0]
    at.selectbox(key="inspect_upload_pick").set_value("seven.png").run()
    target = prefixed(at.selectbox, "w_inspect_target::")
    assert target.options[0] != first_label  # the two images are predicted as different classes
    target.options.append(first_label)  # what the browser sends: the label it still shows
    target.set_value(first_label)
    at.selectbox(key="w_inspect_attribution").set_value("integrated_gradients").run()
    assert not at.exception, at.exception
    assert at.session_state["selection"].target is None and at.session_state["selection"].attribution == "integrated_gradients"
    assert prefixed(at.selectbox, "w_inspect_target::").value == "predicted"
