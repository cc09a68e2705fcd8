"""Links in a user's hands (issue 22): every in-app link carries the whole view, link values
are bounded and validated, the sidebar keeps the user's choices, and the browser history gets
one entry per view change.

Through streamlit.testing, as ``test_app_pages`` (whose helpers are used): a page link is
followed as the browser follows it (its page and query string, the widgets' state sent along).
The CIFAR-10 tests need the shared data root (``GAIA_VIZ_DATA_ROOT``, default ``../shared/data``)
and skip with that reason when it is absent.
"""

from urllib.parse import parse_qs

import pytest

from apptest_support import PAGES, go, open_app, settle
from support import DATA_ROOT
from test_app_pages import follow, links_to

CIFAR_SAMPLES = 40
CIFAR_VIEW = {"model": "cifar_resnet20", "data": "cifar10-real", "ood_sets": "textures",
              "methods": "gaia_z,gaia_a,msp", "tpr": "0.9"}
needs_cifar = pytest.mark.skipif(
    not ((DATA_ROOT / "models" / "cifar10_resnet20.th").is_file() and (DATA_ROOT / "cifar10").is_dir()
         and (DATA_ROOT / "textures").is_dir()),
    reason=f"CIFAR-10, textures or the ResNet-20 weights not found under {DATA_ROOT} (set GAIA_VIZ_DATA_ROOT)")


pytestmark = pytest.mark.usefixtures("app_run_cache")


def query_of(link) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(link.proto.query_string, keep_blank_values=True).items()}


def assert_cifar_view(at, image=None):
    """The CIFAR set-up of :data:`CIFAR_VIEW` and its selection, in the state and in the address bar."""
    assert not at.exception, at.exception
    setup = at.session_state["setup"]
    assert setup is not None and setup.model_name == "cifar_resnet20", at.session_state["setup_errors"]
    assert setup.data_label == "CIFAR-10 (real)" and all(name.startswith("textures") for name in setup.ood_sets)
    chosen = at.session_state["selection"]
    assert chosen.methods == ("gaia_z", "gaia_a", "msp") and chosen.tpr == pytest.approx(0.9)
    if image is not None:
        assert chosen.image == image
    assert {k: at.query_params[k] for k in CIFAR_VIEW} == CIFAR_VIEW
    stray = [w.value for w in at.warning if "not in" in w.value]
    assert not stray, stray  # was: the demo's "layers ... not in (bn1, bn2, bn3)"


# --------------------------------------------------------------------------- (1) links carry the view


@needs_cifar
def test_every_in_app_link_carries_the_set_up_and_the_selection(monkeypatch):
    """Was: both "Open on Inspect" buttons called st.switch_page, which drops every widget's
    state: the demo model on digits #0 opened, the URL lost model and data."""
    monkeypatch.setenv("GAIA_VIZ_DATA_ROOT", str(DATA_ROOT))
    at = open_app("tune", samples=CIFAR_SAMPLES, query=CIFAR_VIEW)
    assert_cifar_view(at)
    cases = links_to(at, "inspect")
    assert len(cases) == 16  # eight OOD and eight ID hardest cases
    for link in (cases[0], cases[-1]):
        query = query_of(link)
        assert {k: query[k] for k in CIFAR_VIEW} == CIFAR_VIEW and query["samples"] == str(CIFAR_SAMPLES)
        set_name, index = query["image"].rsplit(":", 1)
        at = follow(at, link)
        assert at.title[0].value == "Inspect one image"
        assert_cifar_view(at, image=(set_name, int(index)))
        at = go(at, "tune")
    picked = at.session_state["selection"].image
    assert picked[0] == "cifar10-test"  # the last link was an ID case

    at = go(at, "map")
    (link,) = [link for link in links_to(at, "inspect") if link.proto.label == "Open on Inspect"]
    at = follow(at, link)
    assert at.title[0].value == "Inspect one image"
    assert_cifar_view(at, image=picked)

    at = go(at, "home")
    home_links = at.main.get("page_link")
    assert len(home_links) == 3
    for link in home_links:
        assert {k: query_of(link)[k] for k in CIFAR_VIEW} == CIFAR_VIEW, link.proto.label
    at = follow(at, next(link for link in home_links if link.proto.page == "Tune_threshold"))
    assert at.title[0].value == "Tune threshold"
    assert_cifar_view(at, image=picked)


# --------------------------------------------------------------------------- (3) link values bounded


def warnings_of(at) -> list[str]:
    """The warnings' text, Markdown escapes removed."""
    return [w.value.replace("\\", "") for w in at.warning]


def assert_no_traceback_and_short_warnings(at, context=""):
    assert not at.exception, (context, at.exception)
    texts = warnings_of(at)
    assert all(len(text) < 600 for text in texts), (context, [len(t) for t in texts])
    assert len(texts) == len(set(texts)), (context, texts)  # each bad value named once


@pytest.mark.parametrize("page, query, phrase", [
    ("evaluate", {"image": "digits:" + "9" * 5000}, "5,007 characters long"),  # was: int-digit-limit traceback
    ("inspect", {"image": "digits:" + "9" * 4000}, "is not <data set>:<index>"),
    ("inspect", {"target": "9" * 4000, "samples": "9" * 4000}, "target="),
    ("tune", {"model": "cifar_resnet" + "2" * 4000}, "is not a model name"),
    ("evaluate", {"methods": "gaia_z," + "m" * 20000}, "20,007 characters long"),
    ("evaluate", {"methods": "gaia_z," + ",".join(f"bogus{i}" for i in range(300))}, "and 292 more"),
    ("inspect", {"attr_params": ",".join(["integrated_gradients.n_steps:" + "9" * 60] * 20)}, "17 more values refused"),
    ("tune", {"image": "digits:²"}, "is not <data set>:<index>"),
])
def test_hostile_link_values_warn_shortened_and_fall_back(page, query, phrase):
    at = open_app(page, query=query)
    assert_no_traceback_and_short_warnings(at)
    assert any(phrase in text for text in warnings_of(at)), warnings_of(at)
    assert at.session_state["setup"] is not None and at.session_state["setup"].is_demo


def test_a_path_as_model_falls_back_to_the_demo_with_a_warning():
    """Was: ``model=../../etc/passwd`` switched to "torchvision classifier" with an empty custom set."""
    at = open_app("tune", query={"model": "../../etc/passwd"})
    assert_no_traceback_and_short_warnings(at)
    (warning,) = [w for w in warnings_of(at) if "model=" in w]
    assert "etc/passwd" in warning and "using the demo model" in warning
    assert at.sidebar.selectbox(key="sb_model_kind").value == "demo"
    assert at.session_state["sb_data_kind"] == "demo" and at.session_state["setup"].is_demo
    assert "model" not in at.query_params  # the address bar holds the view shown


def test_unknown_sets_and_images_in_a_link_are_named_not_ignored():
    """Was: ``image=x:99999`` and ``ood=<script>...`` were ignored silently."""
    at = open_app("tune", query={"image": "x:99999", "ood": "<script>alert(1)</script>", "utm": "1"})
    assert_no_traceback_and_short_warnings(at)
    texts = " ".join(warnings_of(at))
    assert "ood=" in texts and "not an OOD set of this set-up" in texts
    assert "image=" in texts and "no data set" in texts
    assert "unknown parameter(s) in the link: 'utm'" in texts
    chosen = at.session_state["selection"]
    assert chosen.ood_set is None and chosen.image is None
    assert "ood" not in at.query_params and "image" not in at.query_params
    at = open_app("inspect", query={"image": "faces:99999"})
    assert_no_traceback_and_short_warnings(at)
    assert any("has 100 images (#0 to #99); showing #0" in t for t in warnings_of(at)), warnings_of(at)
    assert at.session_state["selection"].image == ("faces", 0)


def test_link_value_helpers_bound_numbers_and_echoes():
    from gaia_viz.app.links import readable_params, shown, whole_number

    assert whole_number("42") == 42 and whole_number("9" * 9) == 999_999_999
    assert whole_number("9" * 10) is None and whole_number("9" * 5000) is None and whole_number("²") is None
    assert whole_number("-1") is None and whole_number("1e3") is None
    assert shown("x" * 20_000) == "'" + "x" * 40 + "…'" and shown("a\nb") == "'a\\nb'"
    warnings = []
    assert readable_params({"tpr": "0.9", "ood": "a\x00b", "methods": "m" * 5000, "other": "1"},
                           ["tpr", "ood", "methods"], warnings) == {"tpr": "0.9"}
    assert len(warnings) == 2 and all(len(w) < 200 for w in warnings)


# A property of every page: no link value, however hostile, shows a traceback. Values are
# drawn from what breaks parsers (huge integers, control and non-ASCII characters, markup,
# near-miss names); set-up keys that start big runs are limited to small or invalid values.
HOSTILE = ["9" * 4500, "-1", "1e309", "nan", "inf", "²", "0", "<script>alert(1)</script>", "../../etc/passwd",
           "a\x00b", "\u2028", "digits:", ":", "faces:-3", "faces:" + "9" * 20, "x" * 5000, ",,,", "gaia_z,,msp",
           "bn1,zzz", "integrated_gradients.n_steps:1e9", "tv:", "timm:", "cifar_resnet0", "**bold**", "%00", " "]
VALUES = {"samples": ["40", "abc", "9" * 4500], "data": ["demo", "custom", "nope"],
          "model": ["demo", "tv:../x", "timm:nope", "cifar_resnet999999", "gaia_resnet18"]}


def hostile_queries():
    from hypothesis import strategies as st

    from gaia_viz.app.links import SETUP_QUERY_KEYS, VIEW_KEYS

    keys = st.sampled_from([*VIEW_KEYS, *[k for k in SETUP_QUERY_KEYS if k not in VALUES], "zz_unknown"])
    value = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=30))
    free = st.dictionaries(keys, value, max_size=6)
    fixed = st.fixed_dictionaries({}, optional={key: st.sampled_from(choices) for key, choices in VALUES.items()})
    return st.builds(lambda a, b: {**a, **b}, free, fixed)


@pytest.mark.parametrize("page", ["home", "inspect", "evaluate", "tune", "channels", "map", "how", "report"])
def test_no_link_shows_a_traceback_on_any_page(page, tmp_path, monkeypatch):
    hypothesis = pytest.importorskip("hypothesis", reason="the property test needs hypothesis (requirements-dev.txt)")
    monkeypatch.setenv("GAIA_VIZ_DATA_ROOT", str(tmp_path))  # no real data: nothing big is scored
    files = {**PAGES, "how": "pages/5_How_GAIA_works.py", "report": "pages/6_Real_data_report.py"}

    @hypothesis.settings(max_examples=3, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(hostile_queries())
    def opens_without_traceback(query):
        at = open_app(None, query=query)
        at.switch_page(files[page])
        at = settle(at.run())
        assert_no_traceback_and_short_warnings(at, (page, query))

    opens_without_traceback()


# --------------------------------------------------------------------------- (4) the sidebar keeps choices


def sent_values(widget) -> list[str] | None:
    """What the browser is told to show for a multiselect in this run (None: it keeps its own)."""
    return list(widget.proto.raw_values) if widget.proto.set_value else None


def test_the_sidebar_never_undoes_a_choice_and_the_methods_box_shows_what_runs(tmp_path):
    """Was: choosing BiT made Data jump to CIFAR-10; choosing the demo data then reverted the
    model to the demo CNN and emptied the OOD sets and the methods, while the Run button
    still listed the methods."""
    at = open_app("evaluate")
    at.sidebar.multiselect(key="sb_demo_ood").set_value(["faces", "noise"]).run()
    at.sidebar.selectbox(key="sb_model_kind").set_value("bit").run()
    assert not at.exception, at.exception
    assert at.session_state["sb_data_kind"] == "demo"  # the data stays what the user chose
    assert any("not: for it the digits are unfamiliar too" in c.value for c in at.sidebar.caption)
    at.sidebar.checkbox(key="sb_random_weights::bit").check().run()
    methods = at.multiselect(key="w_methods")
    # The run that stopped at the model error did not draw the box; drawn again, the browser
    # is sent the methods the Run button names (it showed "Choose options").
    assert sent_values(methods) == ["GAIA-Z", "GAIA-A", "MSP", "Energy"]
    run_button = next(b for b in at.button if b.key and b.key.startswith("run::"))
    assert run_button.label == "Run evaluation (gaia_z, gaia_a, msp, energy)"
    at.sidebar.selectbox(key="sb_data_kind").set_value("custom").run()
    assert at.session_state["sb_model_kind"] == "bit"
    at.sidebar.selectbox(key="sb_data_kind").set_value("demo").run()
    assert not at.exception, at.exception
    assert at.session_state["sb_model_kind"] == "bit"  # was: back to the demo CNN
    ood = at.sidebar.multiselect(key="sb_demo_ood")
    assert ood.value == ["faces", "noise"] and sent_values(ood) == ["faces", "noise"]  # was: empty
    assert at.session_state["selection"].methods == ("gaia_z", "gaia_a", "msp", "energy")
    at.sidebar.selectbox(key="sb_model_kind").set_value("demo").run()
    assert at.session_state["sb_data_kind"] == "demo" and at.session_state["setup"].is_demo


def test_sidebar_values_streamlit_drops_on_a_page_change_are_put_back(monkeypatch):
    """Was: a click while a page was still drawing (or a link followed from a page still
    settling) sent a request listing only part of the sidebar; on the page change Streamlit
    dropped the other widgets' state, and the set-up fell back to the widgets' own defaults:
    no OOD sets, center-crop, 0 samples (the browser tests saw ``ood_sets=&policy=center-crop``)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetStates
    from streamlit.testing.v1.element_tree import ElementTree

    at = open_app("evaluate", samples=40)
    at.sidebar.multiselect(key="sb_demo_ood").set_value(["faces", "noise"]).run()
    unlisted = ("sb_demo_ood", "sb_ood_policy::demo", "sb_max_samples")
    before = {key: at.session_state[key] for key in unlisted}
    all_states = ElementTree.get_widget_states

    def partial_request(tree):  # the browser's request, without these sidebar widgets
        states = WidgetStates()
        states.widgets.extend(w for w in all_states(tree).widgets if not w.id.endswith(unlisted))
        return states

    monkeypatch.setattr(ElementTree, "get_widget_states", partial_request)
    at.switch_page(PAGES["inspect"])
    at.run()
    monkeypatch.setattr(ElementTree, "get_widget_states", all_states)
    assert not at.exception, at.exception
    assert {key: at.session_state[key] for key in unlisted} == before
    assert at.sidebar.multiselect(key="sb_demo_ood").value == ["faces", "noise"]


def _browser_fallback(widget):
    """The value the browser shows, and sends, for a widget whose state it dropped: the
    widget's own default in the page's message (``element.default``; a selectbox's is an index)."""
    proto = widget.proto
    if widget.type == "multiselect":
        return [widget.options[i] for i in proto.default]
    return proto.default


def test_sidebar_widgets_fall_back_in_the_browser_to_the_sessions_values():
    """Was: the browser tests' flaky ``samples=0`` and ``ood_sets=&policy=center-crop``. The
    browser drops a widget's state when a run finishes while the widget is not drawn (a
    fragment's run finishing while a page change redraws the sidebar), then shows and sends
    the widget's default, and the set-up became no OOD sets, center-crop, 0 samples a set.
    Each sidebar widget is now drawn with the session's value as its default."""
    at = open_app("evaluate", samples=40, query={"ood_sets": "faces,noise", "policy": "resize"})
    widgets = {"sb_demo_ood": "multiselect", "sb_ood_policy::demo": "selectbox", "sb_max_samples": "number_input",
               "sb_data_root": "text_input", "sb_device": "selectbox"}
    before = {key: at.session_state[key] for key in widgets}
    assert before["sb_demo_ood"] == ["faces", "noise"] and before["sb_ood_policy::demo"] == "resize"
    for key, kind in widgets.items():
        widget = getattr(at.sidebar, kind)(key=key)
        if kind == "selectbox":
            widget.select_index(widget.proto.default)
        else:
            widget.set_value(_browser_fallback(widget))
    at.switch_page(PAGES["inspect"])
    at.run()
    assert not at.exception, at.exception
    assert {key: at.session_state[key] for key in widgets} == before
    assert at.query_params["samples"] == "40" and at.query_params["ood_sets"] == "faces,noise"


def test_page_widgets_fall_back_in_the_browser_to_the_selection():
    """As for the sidebar: the Tune page's TPR slider fell back to its minimum (0.5) when the
    browser had dropped its state, and the next request moved the threshold there."""
    at = open_app("tune", query={"tpr": "0.9", "method": "energy"})
    before = at.session_state["selection"]
    assert (before.tpr, before.method) == (0.9, "energy")
    slider = next(s for s in at.main.slider if s.label.startswith("Target TPR"))
    slider.set_value(slider.proto.default[0])
    settle(at.run())
    assert not at.exception, at.exception
    after = at.session_state["selection"]
    assert (after.tpr, after.method) == (0.9, "energy")
    assert at.query_params["tpr"] == "0.9"


def test_a_link_drawn_before_a_fragment_moved_the_view_keeps_the_move():
    """Was: after the Tune slider moved 0.90 -> 0.93 (a fragment's run: the sidebar's links and
    the hardest cases' are not redrawn), the sidebar's Inspect link still said ``tpr=0.9``, and
    following it undid the move. What a link itself changes (a hardest case's image) holds."""
    from dataclasses import replace

    for which in ("sidebar", "hardest case"):
        at = open_app("tune", query={"tpr": "0.9"})
        link = (next(link for link in at.sidebar.get("page_link") if link.proto.page == "Inspect")
                if which == "sidebar" else links_to(at, "inspect")[0])
        assert "tpr=0.9" in link.proto.query_string
        # what the slider's fragment run leaves: the Selection moved and the address bar says so
        # (shell.write_link), the links drawn before stay
        at.session_state["selection"] = replace(at.session_state["selection"], tpr=0.93)
        at.session_state["link_written_query"] = {**at.session_state["link_written_query"], "tpr": "0.93"}
        at = follow(at, link)
        assert not at.exception, at.exception
        assert at.session_state["selection"].tpr == 0.93 and at.query_params["tpr"] == "0.93", which
        assert (at.session_state["selection"].image is not None) == (which == "hardest case")


def test_allow_downloads_is_offered_only_for_models_that_can_download_weights():
    """Was: BiT showed an "Allow downloads" toggle, but its weights only come from a checkpoint."""
    at = open_app("evaluate")

    def toggles():
        return [t.label for t in at.sidebar.toggle]

    assert "Allow downloads" not in toggles()  # the demo CNN's weights are shipped
    at.sidebar.selectbox(key="sb_model_kind").set_value("bit").run()
    assert not at.exception, at.exception
    assert "Allow downloads" not in toggles()
    for kind in ("torchvision", "timm"):
        at.sidebar.selectbox(key="sb_model_kind").set_value(kind).run()
        assert not at.exception, at.exception
        assert "Allow downloads" in toggles(), kind


def test_unavailable_data_is_the_one_change_and_it_is_said(tmp_path, monkeypatch):
    monkeypatch.setenv("GAIA_VIZ_DATA_ROOT", str(tmp_path))  # no CIFAR-10 here
    at = open_app("evaluate", query={"model": "gaia_resnet18", "data": "cifar10-real"})
    assert not at.exception, at.exception
    assert at.session_state["sb_data_kind"] == "custom" and at.session_state["sb_model_kind"] == "gaia"
    (note,) = [w for w in warnings_of(at) if "is not available" in w]
    assert "CIFAR-10 (real)" in note and "data root" in note


# --------------------------------------------------------------------------- (7) history


@pytest.fixture()
def query_writes(monkeypatch):
    """Every query-string message the app sends (the browser adds one history entry for each)."""
    from streamlit.runtime.state.query_params import QueryParams

    sent = []
    original = QueryParams._send_query_param_msg

    def send(self):
        sent.append(dict(self._query_params))
        return original(self)

    monkeypatch.setattr(QueryParams, "_send_query_param_msg", send)
    return sent


def test_one_query_message_per_view_change_and_none_for_a_page_switch(query_writes):
    """Was: the query was written key by key, and Streamlit's navigation dropped it on every
    page switch so the app wrote it back (each message a history entry: Back stayed on the
    page). Checked in Chromium too: one history entry per page switch, the URL keeps its
    parameters, Back and Forward walk the views."""
    at = open_app("tune")
    query_writes.clear()
    for page in ("evaluate", "channels", "tune"):
        at = go(at, page)
    assert query_writes == []  # the view did not change: the browser's own page entry only
    at.slider(key="w_tune_tpr").set_value(0.8).run()
    assert [w.get("tpr") for w in query_writes] == ["0.8"]
    navigation = at.sidebar.get("page_link")  # the app's navigation: page links with the whole view
    assert len(navigation) == 8 and all(query_of(link) == dict(at.query_params) for link in navigation)
    query_writes.clear()
    at.radio(key="w_tune_mode").set_value("score").run()
    slider = next(s for s in at.slider if s.key.startswith("w_tune_score::"))
    slider.set_value(slider.max).run()
    assert len(query_writes) == 1 and "threshold" in query_writes[0] and "tpr" not in query_writes[0]
    query_writes.clear()
    at = follow(at, links_to(at, "inspect")[0])  # the link holds the whole view: nothing to write
    assert at.title[0].value == "Inspect one image" and query_writes == []


def test_back_and_forward_restore_each_view_with_its_parameters():
    """Was: after Back the URL had lost its parameters and the page kept the last view. The
    browser's Back reopens the earlier entry's page with its query string (AppTest: the page
    and query of that entry, the widgets' state sent along)."""
    at = open_app("evaluate", query={"methods": "gaia_z,msp", "ood_sets": "faces,noise", "samples": "60"})
    assert at.session_state["selection"].methods == ("gaia_z", "msp")
    first = dict(at.query_params)
    at = go(at, "tune")
    at.slider(key="w_tune_tpr").set_value(0.8).run()
    at.sidebar.multiselect(key="sb_demo_ood").set_value(["faces"]).run()
    at.sidebar.number_input(key="sb_max_samples").set_value(40).run()
    at = settle(at)
    second = dict(at.query_params)
    assert second["tpr"] == "0.8" and second["ood_sets"] == "faces" and second["samples"] == "40"

    at.query_params.clear()
    at.query_params.update(first)
    at.switch_page(PAGES["evaluate"])
    at = settle(at.run())
    assert not at.exception, at.exception
    chosen = at.session_state["selection"]
    assert chosen.methods == ("gaia_z", "msp") and chosen.tpr == 0.95
    assert at.session_state["sb_demo_ood"] == ["faces", "noise"] and at.session_state["sb_max_samples"] == 60
    assert dict(at.query_params) == first and not warnings_of(at)

    at.query_params.clear()
    at.query_params.update(second)  # Forward
    at.switch_page(PAGES["tune"])
    at = settle(at.run())
    assert at.session_state["selection"].tpr == pytest.approx(0.8)
    assert at.session_state["sb_demo_ood"] == ["faces"] and at.session_state["sb_max_samples"] == 40
    assert dict(at.query_params) == second
