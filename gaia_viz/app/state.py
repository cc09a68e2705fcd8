"""The explorer's one state model: what every page reads and writes, and the link that holds it.

``st.session_state`` keys shared by the pages (nothing else crosses a page):

* ``"setup"``: the :class:`gaia_viz.app.setup.Setup` the sidebar built in this run (None
  while the set-up has an error); ``"setup_errors"``: its
  :class:`gaia_viz.app.setup.SetupError` list (message, the sidebar widget that caused it,
  the control that fixes it).
* ``"selection"``: the :class:`Selection` below: what the user chose on any page. It holds
  until the user changes it, whichever page they are on.
* ``"session_token"``: this browser session's id in the job registry
  (:mod:`gaia_viz.app.jobs`), so a run started here can be cancelled from here.
* ``"link_warnings"``: what was wrong in the link this session was opened with, shown once.
* ``"link_written_query"`` / ``"link_written_page"``: the query string this session last
  wrote and the page it wrote it on; a run on another page (or a Back/Forward step) that
  arrives with another query string followed a link (:func:`followed_link`).

Scores are not session state: finished evaluations live in the process-wide score store of
:mod:`gaia_viz.app.jobs`, keyed by the set-up's score identity, and grow as methods are added.

Widgets never own a value. Each widget has a private key (``sb_*`` in the sidebar, ``w_*`` on
the pages) that is seeded from the Selection before it is drawn and copied back by its
``on_change``; a widget whose options depend on the set-up carries the set-up's identity in
its key, so a changed set-up can never show a stale choice. Streamlit drops the state of a
widget that is not drawn in a run (a page switch), which is why the Selection, not the
widget, is the truth.

The link: :func:`view_query` turns the state into query-string parameters (written at the end
of a run when they changed, so the address bar always reopens the same view, one history
entry per change), :func:`gaia_viz.app.page.link_query` adds the set-up's, every in-app link
carries them (:func:`gaia_viz.app.page.page_link`), and :func:`selection_from_query` reads a link back (bad values become
warnings and fall back), at a session's start and whenever a link is followed. Parameters:
``methods`` (comma list of method ids), ``layers`` / ``inner_layers`` (GAIA-Z layers / GAIA-A
inner layers, names as in ``named_modules()``), ``method`` (the thresholded one), ``tpr``
(0-1) or ``threshold``, ``ood`` (the OOD set a page compares with), ``image`` (``set:index``),
``hist`` (``one``: one OOD set at a time) and ``hist_scale`` (``count`` or ``log``) of the score
histograms, Inspect's ``attribution`` (method id), ``target`` (class index), ``attr_view``
(``abs``: |value| of a signed method) and ``attr_params`` (``method.param:value``, comma
separated, see :data:`gaia_viz.attribution.CONTROLS`), the data map's ``map_color`` (``set``, a
method id or ``agree``) and ``map_compare`` (the method ``agree`` compares the thresholded one
with), Inspect's ``inspect_layer`` (the layer of "GAIA at one layer"), plus the set-up (see :data:`gaia_viz.app.sidebar.SETUP_QUERY_KEYS`).
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import streamlit as st

from gaia_viz.settings import DEFAULT_METHODS

SETUP = "setup"
SETUP_ERRORS = "setup_errors"
SELECTION = "selection"
SESSION_TOKEN = "session_token"
LINK_WARNINGS = "link_warnings"
WRITTEN_QUERY = "link_written_query"
WRITTEN_PAGE = "link_written_page"  # the page of the run that wrote it
DRAWN_WIDGETS = "widgets_drawn_last_run"
LINK_PENDING = "link_pending_checks"  # the link's OOD set and image, checked once the set-up is built
UPLOAD_IMAGE = "upload"  # Inspect's image set name for the user's uploads
TPR_RANGE = (0.5, 1.0)
HISTOGRAM_SETS = ("all", "one")
HISTOGRAM_SCALES = ("fraction", "count", "log")
ATTRIBUTION_VIEWS = ("signed", "abs")
MAP_AGREEMENT = "agree"
VIEW_KEYS = ("methods", "layers", "inner_layers", "method", "tpr", "threshold", "ood", "image", "hist", "hist_scale",
             "attribution", "target", "attr_view", "attr_params", "map_color", "map_compare", "inspect_layer")
ECHO_CHARS = 40  # a link value in a warning: at most this many characters, then '…'
MAX_LINK_CHARS = 4096  # the longest link value read at all (a list of paths included)
MAX_DIGITS = 9  # the longest image index, class index or sample count a link may hold


@dataclass(frozen=True)
class Selection:
    """What the user chose, on any page.

    ``methods``: the methods shown (and scored) on Evaluate; ``zero_layers`` /
    ``inner_layers``: the GAIA-Z / GAIA-A inner layer subsets (None = all layers), used by every
    GAIA number; ``method``: the method Tune threshold thresholds; ``tpr`` (fraction of ID
    accepted) or ``threshold`` (a score) sets its operating point, by ``threshold_mode``
    (``"tpr"`` or ``"score"``); ``ood_set``: the OOD set a page compares the ID set with (None =
    the first); ``image``: ``(data set, index)`` on Inspect (also chosen on Tune threshold's
    hardest cases and the data map); ``attribution``: Inspect's attribution method,
    ``target`` the class it explains (None = the predicted class), ``attribution_view``
    ``"signed"`` or ``"abs"`` (|value|) for signed methods, ``attribution_params`` the
    researcher's settings as sorted ``("method.param", value)`` pairs;
    ``histogram_sets`` (``"all"`` OOD sets or ``"one"``: ``ood_set`` alone) and
    ``histogram_scale`` (``"fraction"``, ``"count"``, ``"log"`` count) of the score
    histograms; ``map_color``: what colours the data map (``"set"``, a method id, or
    ``"agree"``: where ``method`` and ``map_compare`` decide differently).
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    zero_layers: tuple[str, ...] | None = None
    inner_layers: tuple[str, ...] | None = None
    method: str = "gaia_z"
    threshold_mode: str = "tpr"
    tpr: float = 0.95
    threshold: float | None = None
    ood_set: str | None = None
    image: tuple[str, int] | None = None
    attribution: str = "saliency"
    target: int | None = None
    attribution_view: str = "signed"
    attribution_params: tuple[tuple[str, object], ...] = ()
    histogram_sets: str = "all"
    histogram_scale: str = "fraction"
    map_color: str = "set"
    map_compare: str = "msp"
    inspect_layer: str | None = None  # Inspect's "GAIA at one layer" (None: its rule's default)

    def layers_for(self, method: str) -> tuple[str, ...] | None:
        """The layer subset of a GAIA method (None: all layers, or not a GAIA method)."""
        return {"gaia_z": self.zero_layers, "gaia_a": self.inner_layers}.get(method)

    def params_for(self, attribution: str) -> dict:
        """The researcher's settings of one attribution method: ``{param: value}``."""
        prefix = f"{attribution}."
        return {key[len(prefix):]: value for key, value in self.attribution_params if key.startswith(prefix)}

    def with_param(self, attribution: str, param: str, value) -> "Selection":
        """This Selection with ``attribution``'s ``param`` set (None: back to its default)."""
        kept = {key: v for key, v in self.attribution_params if key != f"{attribution}.{param}"}
        if value is not None:
            kept[f"{attribution}.{param}"] = value
        return replace(self, attribution_params=tuple(sorted(kept.items())))


def selection() -> Selection:
    """This session's Selection (the defaults before anything was chosen)."""
    return st.session_state.get(SELECTION) or Selection()


def update_selection(**changes) -> Selection:
    """Replace fields of the Selection; returns the new one."""
    new = replace(selection(), **changes)
    st.session_state[SELECTION] = new
    return new


def session_token() -> str:
    """A random id of this browser session (for the job registry)."""
    if SESSION_TOKEN not in st.session_state:
        st.session_state[SESSION_TOKEN] = uuid.uuid4().hex
    return st.session_state[SESSION_TOKEN]


# --------------------------------------------------------------------------- widgets


def bound_widget(draw: Callable, key: str, value, on_change: Callable[[object], None], **kwargs):
    """Draw ``draw(..., key=key)`` holding ``value``, copying a change back through
    ``on_change(new_value)``.

    The widget's own state is seeded from ``value`` when Streamlit does not hold it (first
    draw, or after a page switch dropped it) or when ``value`` changed elsewhere (another
    page, a link), so the widget always shows the Selection.
    """
    seeded = f"{key}::seeded"
    if key not in st.session_state or st.session_state.get(seeded) != _frozen(value):
        st.session_state[key] = value
        st.session_state[seeded] = _frozen(value)

    def copy_back():
        new = st.session_state[key]
        st.session_state[seeded] = _frozen(new)
        on_change(new)

    note_drawn_widgets(key)
    return draw(key=key, on_change=copy_back, **kwargs)


def _frozen(value):
    return tuple(value) if isinstance(value, list) else value


def drawn_widgets() -> frozenset[str]:
    """The widget keys drawn so far in this script run."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.shared.widget_user_keys_this_run.snapshot() if ctx is not None else frozenset()


def resend_undrawn_widgets(prefixes: tuple[str, ...] = ("sb_", "w_")) -> None:
    """At the start of a run, before anything is drawn: set again the value of every widget
    (keys starting with ``prefixes``) that the last run did not draw, and start recording
    what this run draws (:func:`note_drawn_widgets`).

    A run that stops early (``st.stop``: the set-up has an error, scores are missing) keeps
    the values of the widgets it did not reach, while the browser forgets them; drawn again,
    the browser showed the widget's default ("Choose options", the demo's OOD sets emptied)
    while the script went on with the kept value (the Run button listed the methods). Set
    again, the value is sent to the browser with the widget."""
    from streamlit.errors import StreamlitAPIException

    drawn = st.session_state.get(DRAWN_WIDGETS)
    st.session_state[DRAWN_WIDGETS] = set()
    if drawn is None:
        return
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(prefixes) and k not in drawn]:
        value = st.session_state[key]
        if key.endswith("::seeded") or "upload" in key or not isinstance(value, (str, int, float, list, tuple)):
            continue  # markers, uploads (None or files) and other state that is no plain value
        try:
            st.session_state[key] = value
        except StreamlitAPIException:  # a button: its value cannot be set
            pass


def note_drawn_widgets(*keys: str) -> None:
    """Record ``keys`` and every widget drawn so far in this run as drawn (for
    :func:`resend_undrawn_widgets`). The set is changed in place: after a page's ``st.stop()``
    Streamlit refuses new session-state assignments, not changes to what is stored."""
    drawn = st.session_state.get(DRAWN_WIDGETS)
    if drawn is not None:
        drawn.update(drawn_widgets(), keys)


# --------------------------------------------------------------------------- links


def _split(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


def shown(value) -> str:
    """A link value as a warning names it: quoted, control characters escaped, at most
    :data:`ECHO_CHARS` characters and then '…' (a 20,000-character value is not echoed)."""
    from gaia_viz.paths import echo

    return f"'{echo(value, ECHO_CHARS + 1)}'"


def whole_number(text, digits: int = MAX_DIGITS) -> int | None:
    """``text`` as a non-negative integer of at most ``digits`` ASCII digits, else None. Python
    refuses to parse integers of more than 4,300 digits (and ``str.isdigit`` accepts '²')."""
    text = str(text).strip()
    return int(text) if re.fullmatch(rf"[0-9]{{1,{digits}}}", text) else None


def readable_params(params: Mapping[str, str], keys: Sequence[str], warnings: list[str]) -> dict[str, str]:
    """The link parameters among ``keys`` that may be read at all: a value longer than
    :data:`MAX_LINK_CHARS` or holding a control character is refused, named once in ``warnings``."""
    from gaia_viz.errors import GaiaVizError
    from gaia_viz.paths import check_text

    kept = {}
    for key in keys:
        if key not in params:
            continue
        value = str(params[key])
        if len(value) > MAX_LINK_CHARS:
            warnings.append(f"{key} in the link is {len(value):,} characters long (at most {MAX_LINK_CHARS:,}): "
                            f"{shown(value)} was ignored")
            continue
        try:
            kept[key] = check_text(value, key)
        except GaiaVizError:
            warnings.append(f"{key}={shown(value)} in the link holds a control character: ignored")
    return kept


def shown_names(names: Sequence[str], limit: int = 8) -> str:
    """Names for a warning: each shortened, at most ``limit`` of them."""
    listed = ", ".join(shown(n) for n in names[:limit])
    return listed + (f" and {len(names) - limit} more" if len(names) > limit else "")


def selection_from_query(params: Mapping[str, str], known_methods: Sequence[str],
                         base: Selection | None = None) -> tuple[Selection, list[str]]:
    """The Selection a link asks for, and one warning for every value that was refused (its
    value shortened, :func:`shown`); a refused value falls back to ``base`` (the defaults).

    Layers are checked later, against the evaluated model (:func:`checked_layers`), and the
    OOD set and image against the set-up (:func:`check_link_against`)."""
    chosen = base or Selection()
    warnings: list[str] = []
    params = readable_params(params, VIEW_KEYS, warnings)
    changes: dict = {}
    if "methods" in params:
        names = list(dict.fromkeys(_split(params["methods"])))
        unknown = [m for m in names if m not in known_methods]
        good = [m for m in names if m in known_methods]
        if unknown:
            warnings.append(f"unknown method(s) in the link: {shown_names(unknown)} (known: {', '.join(known_methods)})")
        if good:
            changes["methods"] = tuple(good)
    if "method" in params:
        if params["method"] in known_methods:
            changes["method"] = params["method"]
        else:
            warnings.append(f"unknown method in the link: {shown(params['method'])}; thresholding {chosen.method}")
    for key, attr in (("layers", "zero_layers"), ("inner_layers", "inner_layers")):
        if key in params:
            names = _split(params[key])
            changes[attr] = tuple(dict.fromkeys(names)) if names else None
    if "tpr" in params:
        try:
            tpr = float(params["tpr"])
        except ValueError:
            tpr = math.nan
        if TPR_RANGE[0] <= tpr <= TPR_RANGE[1]:
            changes.update(tpr=tpr, threshold_mode="tpr")
        else:
            warnings.append(f"tpr={shown(params['tpr'])} in the link is not a fraction between "
                            f"{TPR_RANGE[0]} and {TPR_RANGE[1]}; using {chosen.tpr}")
    if "threshold" in params and "tpr" not in params:
        try:
            value = float(params["threshold"])
            if not math.isfinite(value):
                raise ValueError
            changes.update(threshold=value, threshold_mode="score")
        except ValueError:
            warnings.append(f"threshold={shown(params['threshold'])} in the link is not a number; using the TPR")
    if "ood" in params and params["ood"].strip():
        changes["ood_set"] = params["ood"].strip()
    if "image" in params:
        name, sep, index = params["image"].rpartition(":")
        if sep and name and whole_number(index) is not None:
            changes["image"] = (name, whole_number(index))
        else:
            warnings.append(f"image={shown(params['image'])} in the link is not <data set>:<index> "
                            f"(an index of at most {MAX_DIGITS} digits)")
    for key, attr, allowed in (("hist", "histogram_sets", HISTOGRAM_SETS), ("hist_scale", "histogram_scale", HISTOGRAM_SCALES),
                               ("attr_view", "attribution_view", ATTRIBUTION_VIEWS)):
        if key in params:
            if params[key] in allowed:
                changes[attr] = params[key]
            else:
                warnings.append(f"{key}={shown(params[key])} in the link is not one of {', '.join(allowed)}")
    changes.update(_attribution_from_query(params, warnings))
    if "map_color" in params:
        if params["map_color"] in ("set", MAP_AGREEMENT, *known_methods):
            changes["map_color"] = params["map_color"]
        else:
            warnings.append(f"map_color={shown(params['map_color'])} in the link is not 'set', 'agree' or a method")
    if "inspect_layer" in params and params["inspect_layer"].strip():
        changes["inspect_layer"] = params["inspect_layer"].strip()[:200]  # checked on Inspect, against the model
    if "map_compare" in params:
        if params["map_compare"] in known_methods:
            changes["map_compare"] = params["map_compare"]
        else:
            warnings.append(f"map_compare={shown(params['map_compare'])} in the link is not a method")
    return replace(chosen, **changes), warnings


def _attribution_from_query(params: Mapping[str, str], warnings: list[str]) -> dict:
    """Inspect's attribution choices in a link (see the module docstring)."""
    from gaia_viz.attribution import ATTRIBUTION_METHODS, control
    from gaia_viz.errors import GaiaVizError
    from gaia_viz.paths import echo

    changes: dict = {}
    if "attribution" in params:
        if params["attribution"] in ATTRIBUTION_METHODS:
            changes["attribution"] = params["attribution"]
        else:
            warnings.append(f"attribution={shown(params['attribution'])} in the link is not one of "
                            f"{', '.join(ATTRIBUTION_METHODS)}")
    if "target" in params:
        if whole_number(params["target"]) is not None:
            changes["target"] = whole_number(params["target"])
        else:
            warnings.append(f"target={shown(params['target'])} in the link is not a class index")
    if "attr_params" in params:
        pairs = {}
        refused = []
        for item in _split(params["attr_params"]):
            key, sep, text = item.partition(":")
            method, dot, param = key.partition(".")
            try:
                if not (sep and dot) or len(text) > 2 * ECHO_CHARS:
                    raise GaiaVizError(f"{shown(item)} is not method.param:value")
                pairs[key] = control(method, param).parse(text)
            except GaiaVizError as exc:
                refused.append(echo(exc, 3 * ECHO_CHARS))
        for reason in refused[:3]:
            warnings.append(f"attr_params in the link: {reason}; left at its default")
        if len(refused) > 3:
            warnings.append(f"attr_params in the link: {len(refused) - 3} more values refused; left at their defaults")
        changes["attribution_params"] = tuple(sorted(pairs.items()))
    return changes


def view_query(chosen: Selection) -> dict[str, str]:
    """The query-string parameters of the Selection (defaults left out)."""
    default = Selection()
    query: dict[str, str] = {}
    if chosen.methods != default.methods:
        query["methods"] = ",".join(chosen.methods)
    if chosen.zero_layers is not None:
        query["layers"] = ",".join(chosen.zero_layers)
    if chosen.inner_layers is not None:
        query["inner_layers"] = ",".join(chosen.inner_layers)
    if chosen.method != default.method:
        query["method"] = chosen.method
    if chosen.threshold_mode == "score" and chosen.threshold is not None:
        query["threshold"] = f"{chosen.threshold:.6g}"
    elif chosen.tpr != default.tpr:
        query["tpr"] = f"{chosen.tpr:g}"
    if chosen.ood_set:
        query["ood"] = chosen.ood_set
    if chosen.image is not None:
        query["image"] = f"{chosen.image[0]}:{chosen.image[1]}"
    for key, attr in (("hist", "histogram_sets"), ("hist_scale", "histogram_scale"), ("attribution", "attribution"),
                      ("attr_view", "attribution_view"), ("map_color", "map_color"), ("map_compare", "map_compare")):
        if getattr(chosen, attr) != getattr(default, attr):
            query[key] = str(getattr(chosen, attr))
    if chosen.target is not None:
        query["target"] = str(chosen.target)
    if chosen.inspect_layer:
        query["inspect_layer"] = chosen.inspect_layer
    if chosen.attribution_params:
        query["attr_params"] = ",".join(f"{key}:{value!r}" if isinstance(value, float) else f"{key}:{value}"
                                        for key, value in chosen.attribution_params)
    return query


def write_query(params: Mapping[str, str]) -> None:
    """Make the address bar's query string exactly ``params``: one message, and only when it
    changed (the browser adds a history entry for every query-string message)."""
    params = {key: str(value) for key, value in params.items()}
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)
    st.session_state[WRITTEN_QUERY] = params
    st.session_state[WRITTEN_PAGE] = _page_and_history()[0]


def _page_and_history() -> tuple[str | None, bool]:
    """This run's page (its script hash) and whether the browser's Back/Forward started it."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:
        return None, False
    return ctx.page_script_hash, bool(getattr(ctx, "is_history_navigation", False))


def warn_link(message: str, draw: bool = True) -> None:
    """Keep a warning about the link (each message once): shown at the top of every page
    until dismissed, and, with ``draw``, also where it arose in this run."""
    kept = st.session_state.setdefault(LINK_WARNINGS, [])
    if message not in kept:
        kept.append(message)
        if draw:
            from gaia_viz.app.paths import escape_markdown

            st.warning(escape_markdown(message))


def show_link_warnings() -> None:
    """The link's warnings at the top of the page, until the user dismisses them."""
    from gaia_viz.app.paths import escape_markdown

    kept = st.session_state.get(LINK_WARNINGS, [])
    for message in kept:
        st.warning(escape_markdown(message))
    if kept:
        st.button("Dismiss", key="dismiss_link_warnings", on_click=lambda: st.session_state.pop(LINK_WARNINGS, None))


def checked_layers(chosen: Sequence[str] | None, available: Sequence[str], label: str) -> tuple[str, ...] | None:
    """``chosen`` restricted to ``available``: None = all layers, ``()`` = none chosen (a
    score then cannot be computed, and says so). Unknown names become one link warning and
    are dropped (all layers when none is left)."""
    if chosen is None:
        return None
    if not chosen:
        return ()
    unknown = [name for name in chosen if name not in available]
    if unknown:
        warn_link(f"{label} layer(s) {shown_names(unknown)} are not in this model's evaluated layers "
                  f"({', '.join(list(available)[:12])}{', …' if len(available) > 12 else ''}); they were dropped")
    kept = tuple(name for name in available if name in chosen)
    return kept if kept and len(kept) < len(available) else None


def check_link_against(setup) -> None:
    """The OOD set and image of the link just read, against the set-up the sidebar built:
    a set this set-up does not have, or an index past a set's end, is one warning and falls
    back (the first OOD set; the set's first image, or none). Once per link read."""
    if setup is None or not st.session_state.get(LINK_PENDING):
        return
    pending = st.session_state.pop(LINK_PENDING)
    chosen = selection()
    if "ood" in pending and chosen.ood_set is not None and chosen.ood_set not in setup.ood_sets:
        warn_link(f"ood={shown(chosen.ood_set)} in the link is not an OOD set of this set-up "
                  f"({shown_names(list(setup.ood_sets))}); showing the first", draw=False)
        update_selection(ood_set=None)
    if "image" in pending and chosen.image is not None and chosen.image[0] != UPLOAD_IMAGE:
        name, index = chosen.image
        sets = setup.image_sets
        if name not in sets:
            warn_link(f"image={shown(pending['image'])} in the link: this set-up has no data set {shown(name)} "
                      f"({shown_names(list(sets))}); showing the first", draw=False)
            update_selection(image=None)
        elif index >= len(sets[name]):
            warn_link(f"image={shown(pending['image'])} in the link: {shown(name)} has {len(sets[name]):,} images "
                      f"(#0 to #{len(sets[name]) - 1:,}); showing #0", draw=False)
            update_selection(image=(name, 0))


def _remember_checks(params: Mapping[str, str]) -> None:
    st.session_state[LINK_PENDING] = {key: params[key] for key in ("ood", "image") if key in params}


def _unknown_keys(params: Mapping[str, str], setup_keys: Sequence[str]) -> list[str]:
    unknown = [key for key in params if key not in VIEW_KEYS and key not in setup_keys]
    return [f"unknown parameter(s) in the link: {shown_names(unknown)}; ignored"] if unknown else []


@dataclass
class LinkState:
    """What a session's first request asked for: the selection and the set-up parameters."""

    selection: Selection = field(default_factory=Selection)
    setup_params: dict = field(default_factory=dict)
    had_view: bool = False  # the link named a view (auto-run what it needs)
    setup_changed: bool = True  # a followed link: its set-up differs from the one shown


def followed_link(known_methods: Sequence[str], setup_keys: Sequence[str]) -> LinkState | None:
    """On a later run: when the query string is not the one this session wrote last, the user
    followed a link inside the session (an in-app :func:`gaia_viz.app.page.page_link`, the browser's Back or
    Forward): its view replaces the Selection (a link holds the whole view, so what it leaves
    out is the default) and it is returned, with ``setup_changed`` when its set-up parameters
    differ from the written ones. None when nothing was followed."""
    written = st.session_state.get(WRITTEN_QUERY)
    params = st.query_params.to_dict()
    # Only a page change or a history step follows a link: a rerun the script asked for
    # (st.rerun) carries the query string from before the run's own write.
    page, history = _page_and_history()
    moved = history or page != st.session_state.get(WRITTEN_PAGE)
    if written is None or params == written or not moved or not params:  # no query names no view
        return None
    chosen, warnings = selection_from_query(params, known_methods)
    st.session_state[SELECTION] = chosen
    _remember_checks(params)
    for message in _unknown_keys(params, setup_keys) + warnings:
        warn_link(message, draw=False)
    setup_params = {k: v for k, v in params.items() if k in setup_keys}
    changed = any(params.get(k) != written.get(k) for k in setup_keys)
    return LinkState(chosen, setup_params, had_view=False, setup_changed=changed)


def start_session(known_methods: Sequence[str], setup_keys: Sequence[str]) -> LinkState | None:
    """On a session's first run: read the link into the Selection (warnings kept for the
    page) and return it; None on every later run."""
    if SELECTION in st.session_state:
        return None
    params = st.query_params.to_dict()
    chosen, warnings = selection_from_query(params, known_methods)
    st.session_state[SELECTION] = chosen
    _remember_checks(params)
    for message in _unknown_keys(params, setup_keys) + warnings:
        warn_link(message, draw=False)
    view_keys = {"methods", "layers", "inner_layers", "method", "tpr", "threshold", "image", "map_color",
                 "inspect_layer"}
    return LinkState(chosen, {k: v for k, v in params.items() if k in setup_keys},
                     had_view=bool(view_keys & set(params)))


__all__ = ["ATTRIBUTION_VIEWS", "HISTOGRAM_SCALES", "HISTOGRAM_SETS", "LINK_WARNINGS", "LinkState", "MAP_AGREEMENT", "SELECTION", "SESSION_TOKEN", "SETUP", "SETUP_ERRORS", "Selection",
           "WRITTEN_QUERY", "bound_widget", "drawn_widgets", "note_drawn_widgets", "resend_undrawn_widgets", "check_link_against", "checked_layers", "followed_link", "selection",
           "selection_from_query", "session_token", "shown", "shown_names", "whole_number", "readable_params",
           "show_link_warnings", "start_session", "update_selection", "view_query", "warn_link", "write_query"]
