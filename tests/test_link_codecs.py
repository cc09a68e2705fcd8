"""The link codecs as plain functions (gaia_viz.app.links): the Selection and the sidebar's
set-up to query-string parameters and back, without Streamlit. Round trips, bad values named
(shortened) with their fallback, and the bounds on what a link may hold."""

import pytest

from gaia_viz.app import keys
from gaia_viz.app.catalogue import DEFAULT_MAX_SAMPLES
from gaia_viz.app.links import (ECHO_CHARS, MAX_DIGITS, MAX_LINK_CHARS, SETUP_QUERY_KEYS, VIEW_KEYS, seeded_widgets,
                                selection_from_query, setup_query, unknown_keys, view_query)
from gaia_viz.app.selection import Selection
from gaia_viz.demo import DEMO_OOD_NAMES

METHODS = ["gaia_z", "gaia_a", "msp", "energy", "react"]
LONGEST_WARNING = 400  # a warning names a bad value shortened, never the whole value


# --------------------------------------------------------------------------- the Selection


def test_the_default_selection_is_the_empty_query_and_back():
    assert view_query(Selection()) == {}
    assert selection_from_query({}, METHODS) == (Selection(), [])


def test_every_selection_field_survives_a_round_trip():
    chosen = Selection(methods=("msp", "gaia_z"), zero_layers=("layer1", "layer2.0"), inner_layers=("layer3",),
                       method="msp", tpr=0.9, ood_set="faces", image=("faces", 12), histogram_sets="one",
                       histogram_scale="log", attribution="grad_cam", target=3, attribution_view="abs",
                       attribution_params=(("integrated_gradients.n_steps", 32),), map_color="agree",
                       map_compare="energy", inspect_layer="layer2.0")
    query = view_query(chosen)
    assert set(query) <= set(VIEW_KEYS)
    assert all(isinstance(value, str) for value in query.values())
    assert selection_from_query(query, METHODS) == (chosen, [])


def test_a_score_threshold_round_trips_and_a_tpr_wins_over_it():
    chosen = Selection(threshold_mode="score", threshold=-1.25)
    assert selection_from_query(view_query(chosen), METHODS) == (chosen, [])
    both, warnings = selection_from_query({"tpr": "0.8", "threshold": "3"}, METHODS)
    assert (both.threshold_mode, both.tpr, both.threshold, warnings) == ("tpr", 0.8, None, [])


@pytest.mark.parametrize("params, named, fallback", [
    ({"tpr": "1.5"}, "tpr='1.5'", ("tpr", 0.95)),
    ({"tpr": "nan"}, "tpr='nan'", ("tpr", 0.95)),
    ({"threshold": "inf"}, "threshold='inf'", ("threshold_mode", "tpr")),
    ({"method": "nope"}, "'nope'", ("method", "gaia_z")),
    ({"methods": "msp,zzz"}, "'zzz'", ("methods", ("msp",))),
    ({"image": "faces:" + "9" * (MAX_DIGITS + 1)}, "image=", ("image", None)),
    ({"image": "faces"}, "image='faces'", ("image", None)),
    ({"hist": "some"}, "hist='some'", ("histogram_sets", "all")),
    ({"attr_view": "x"}, "attr_view='x'", ("attribution_view", "signed")),
    ({"attribution": "magic"}, "attribution='magic'", ("attribution", "saliency")),
    ({"target": "-1"}, "target='-1'", ("target", None)),
    ({"map_color": "red"}, "map_color='red'", ("map_color", "set")),
    ({"map_compare": "red"}, "map_compare='red'", ("map_compare", "msp")),
    ({"attr_params": "integrated_gradients.n_steps:many"}, "attr_params", ("attribution_params", ())),
])
def test_a_bad_selection_value_is_named_once_and_falls_back(params, named, fallback):
    chosen, warnings = selection_from_query(params, METHODS)
    assert len(warnings) == 1 and named in warnings[0], warnings
    field, value = fallback
    assert getattr(chosen, field) == value


def test_link_values_are_bounded_and_echoed_shortened():
    huge = "9" * (MAX_LINK_CHARS + 1)
    chosen, warnings = selection_from_query({"tpr": huge, "ood": "a\x00b", "image": "faces:" + "9" * 5000}, METHODS)
    assert chosen == Selection()
    assert len(warnings) == 3 and all(len(w) < LONGEST_WARNING for w in warnings), warnings
    assert any(f"{MAX_LINK_CHARS:,}" in w for w in warnings)
    assert any("control character" in w for w in warnings)
    assert any("9" * ECHO_CHARS + "…" in w and "9" * (ECHO_CHARS + 1) not in w for w in warnings)


def test_a_link_to_a_base_keeps_the_base_where_it_says_nothing():
    base = Selection(method="energy", tpr=0.8)
    chosen, warnings = selection_from_query({"ood": "faces"}, METHODS, base)
    assert (chosen.method, chosen.tpr, chosen.ood_set, warnings) == ("energy", 0.8, "faces", [])


def test_unknown_parameters_are_one_warning():
    assert unknown_keys({"tpr": "0.9", "model": "demo"}, SETUP_QUERY_KEYS) == []
    (warning,) = unknown_keys({"utm": "1", "x" * 500: "2"}, SETUP_QUERY_KEYS)
    assert "'utm'" in warning and len(warning) < LONGEST_WARNING


# --------------------------------------------------------------------------- the set-up


def test_the_default_set_up_is_the_empty_query_and_the_empty_query_seeds_the_demo():
    assert setup_query({}) == {}
    widgets, warnings = seeded_widgets({}, {})
    assert warnings == [] and widgets == {keys.SB_DATA_KIND: "demo"}
    assert setup_query(widgets) == {}


@pytest.mark.parametrize("params", [
    {"model": "cifar_resnet56", "checkpoint": "/weights/r56.th", "data": "cifar10-real",
     "ood_sets": "textures,lsun_resize", "policy": "resize", "samples": "0"},
    {"model": "gaia_resnet34", "data": "custom", "id": "/data/id", "fit": "torchvision:CIFAR10:train",
     "ood_sets": "textures = /data/dtd/images;svhn = torchvision:SVHN:test", "policy": "resize"},
    {"ood_sets": "faces,noise", "samples": "40"},
    {"model": "cifar_densenet_bc100"},
    {"model": "BiT-S-R101x1", "data": "cifar10-real", "policy": "center-crop"},
    {"model": "tv:resnet18", "data": "custom", "id": "demo:digits", "ood_sets": "demo:faces"},
])
def test_a_set_up_survives_a_round_trip_through_the_widgets(params):
    widgets, warnings = seeded_widgets(params, {})
    assert warnings == []
    if "ood_sets" in params and params.get("data") == "cifar10-real":
        # the benchmark sets are applied when the widget is drawn (they depend on the data root)
        assert widgets.pop(keys.SB_BENCH_OOD_REQUESTED) == params["ood_sets"].split(",")
        widgets[keys.SB_BENCH_OOD] = params["ood_sets"].split(",")
    assert setup_query(widgets) == params


def test_seeding_returns_new_widgets_and_leaves_the_given_ones_alone():
    before = {keys.SB_MODEL_KIND: "cifar", keys.SB_CIFAR_DEPTH: 20, keys.checkpoint_path("cifar"): "/w.th",
              keys.preset("cifar_resnet20"): "gaia-cifar10", keys.ood_policy("demo"): "center-crop",
              keys.SB_DEMO_OOD: ["faces"]}
    kept = dict(before)
    after, warnings = seeded_widgets({"samples": "40"}, before)
    assert before == kept and warnings == []
    assert after == {**before, keys.SB_DATA_KIND: "demo", keys.SB_MAX_SAMPLES: 40}
    # a complete link (Back to another set-up): what it leaves out is the default
    after, warnings = seeded_widgets({"samples": "40"}, before, complete=True)
    assert before == kept and warnings == []
    assert after == {keys.SB_MODEL_KIND: "demo", keys.SB_CIFAR_DEPTH: 20, keys.SB_DATA_KIND: "demo",
                     keys.SB_DEMO_OOD: list(DEMO_OOD_NAMES), keys.SB_MAX_SAMPLES: 40}
    assert setup_query(after) == {"samples": "40"}


def test_a_preset_is_requested_for_the_widget_and_written_once_drawn():
    widgets, warnings = seeded_widgets({"preset": "imagenet224"}, {})
    assert warnings == [] and widgets[keys.SB_PRESET_REQUESTED] == "imagenet224"
    drawn = {**widgets, keys.SB_PRESET_CURRENT: ("imagenet224", "demo-mnist28")}
    assert setup_query(drawn) == {"preset": "imagenet224"}
    assert setup_query({**widgets, keys.SB_PRESET_CURRENT: ("demo-mnist28", "demo-mnist28")}) == {}


@pytest.mark.parametrize("params, named, widget, fallback", [
    ({"model": "cifar_resnet999"}, "depth '999'", keys.SB_CIFAR_DEPTH, None),
    ({"model": "tv:../x"}, "model='tv:../x'", keys.SB_MODEL_KIND, None),
    ({"model": "tv:not_a_model"}, "is not a torchvision classifier", keys.SB_TV_NAME, None),
    ({"data": "nope"}, "data='nope'", keys.SB_DATA_KIND, "demo"),
    ({"ood_sets": "faces,zzz"}, "'zzz'", keys.SB_DEMO_OOD, ["faces"]),
    ({"preset": "big"}, "preset='big'", keys.SB_PRESET_REQUESTED, None),
    ({"policy": "stretch"}, "policy='stretch'", keys.ood_policy("demo"), None),
    ({"samples": "9" * (MAX_DIGITS + 1)}, f"at most {MAX_DIGITS} digits", keys.SB_MAX_SAMPLES, None),
    ({"samples": "-3"}, "samples='-3'", keys.SB_MAX_SAMPLES, None),
    ({"checkpoint": "x" * (MAX_LINK_CHARS + 1)}, f"at most {MAX_LINK_CHARS:,}", keys.checkpoint_path("demo"), None),
    ({"id": "a\x00b", "data": "custom"}, "control character", keys.SB_CUSTOM_ID, None),
])
def test_a_bad_set_up_value_is_named_once_shortened_and_falls_back(params, named, widget, fallback):
    widgets, warnings = seeded_widgets(params, {})
    assert len(warnings) == 1 and named in warnings[0], warnings
    assert len(warnings[0]) < LONGEST_WARNING
    assert widgets.get(widget) == fallback


def test_a_bad_sample_count_keeps_the_one_the_sidebar_holds():
    widgets, warnings = seeded_widgets({"samples": "many"}, {keys.SB_MAX_SAMPLES: 200})
    assert widgets[keys.SB_MAX_SAMPLES] == 200 and "using 200" in warnings[0]
    widgets, warnings = seeded_widgets({"samples": "many"}, {})
    assert keys.SB_MAX_SAMPLES not in widgets and f"using {DEFAULT_MAX_SAMPLES}" in warnings[0]


def test_a_checkpoint_is_kept_only_for_a_model_that_reads_one():
    widgets, _ = seeded_widgets({"model": "demo", "checkpoint": "/w.pt"}, {})
    assert not any(key.startswith(keys.SB_CHECKPOINT_PATH) for key in widgets)
    widgets, _ = seeded_widgets({"model": "cifar_resnet20", "checkpoint": "/w.pt"}, {})
    assert widgets[keys.checkpoint_path("cifar")] == "/w.pt"
