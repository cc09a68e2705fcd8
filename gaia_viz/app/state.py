"""The explorer's one state model: what every page reads and writes, and the link that holds it.

Every key the app stores in ``st.session_state`` is named, with its owner and what it holds,
in :mod:`gaia_viz.app.keys`; this module owns those that cross pages:

* ``keys.SETUP``: the :class:`gaia_viz.app.setup.Setup` the sidebar built in this run (None
  while the set-up has an error); ``keys.SETUP_ERRORS``: its
  :class:`gaia_viz.app.setup.SetupError` list (message, the sidebar widget that caused it,
  the control that fixes it). The sidebar writes both, every page reads them.
* ``keys.SELECTION``: the :class:`gaia_viz.app.selection.Selection`: what the user chose on
  any page. It holds until the user changes it, whichever page they are on.
* ``keys.SESSION_TOKEN``: this browser session's id in the job registry
  (:mod:`gaia_viz.app.jobs`), so a run started here can be cancelled from here.
* ``keys.LINK_WARNINGS``: what was wrong in the link this session was opened with, shown once.
* ``keys.WRITTEN_QUERY`` / ``keys.WRITTEN_PAGE``: the query string this session last wrote
  and the page it wrote it on; a run on another page (or a Back/Forward step) that arrives
  with another query string followed a link (:func:`followed_link`).
  ``keys.LINKS_DRAWN_WITH``: the view the last full run drew its links with
  (:func:`note_links_drawn`); a fragment (the Tune slider) changes the view without
  redrawing them.

Besides these, only the runs' bookkeeping of :mod:`gaia_viz.app.page` (auto-run, cancelled
and dismissed runs) and the widgets' own keys live in the session, each listed in
:mod:`gaia_viz.app.keys`. Scores are not session state: finished evaluations live in the
process-wide score store of :mod:`gaia_viz.app.jobs`, keyed by the set-up's score identity,
and grow as methods are added.

Widgets never own a value. Each widget has a private key (``sb_*`` in the sidebar, ``w_*`` on
the pages) that is seeded from the Selection before it is drawn and copied back by its
``on_change``; a widget whose options depend on the set-up carries the set-up's identity in
its key, so a changed set-up can never show a stale choice. Streamlit drops the state of a
widget that is not drawn in a run (a page switch), which is why the Selection, not the
widget, is the truth.

The link: :func:`gaia_viz.app.links.view_query` and :func:`gaia_viz.app.links.setup_query`
turn the state into query-string parameters (written at the end of a run when they changed,
:func:`write_query`, so the address bar always reopens the same view, one history entry per
change), :func:`gaia_viz.app.page.link_query` joins them, every in-app link carries them
(:func:`gaia_viz.app.page.page_link`), and :func:`gaia_viz.app.links.selection_from_query` /
:func:`gaia_viz.app.links.seeded_widgets` read a link back (bad values become warnings and
fall back), at a session's start (:func:`start_session`) and whenever a link is followed
(:func:`followed_link`). The parameters are listed in :mod:`gaia_viz.app.links`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import streamlit as st

from gaia_viz.app import links
from gaia_viz.app.keys import (DRAWN_WIDGETS, KEPT_SETUP, LINK_PENDING, LINK_WARNINGS, LINKS_DRAWN_WITH, PAGE_PREFIX,
                               SELECTION, SESSION_TOKEN, SIDEBAR_PREFIX, WRITTEN_PAGE, WRITTEN_QUERY)
from gaia_viz.app.links import VIEW_KEYS, selection_from_query, shown, shown_names, unknown_keys
from gaia_viz.app.selection import UPLOAD_IMAGE, Selection


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
    return draw(key=key, on_change=copy_back, **_with_default(draw, st.session_state[key], kwargs))


def _with_default(draw: Callable, value, kwargs: dict) -> dict:
    """``kwargs`` with the widget's default set to ``value``. The browser shows, and sends, a
    widget's default once it has dropped the widget's state (a run finishing while the widget
    is not drawn); the default is then the session's value, not the slider's minimum or the
    first option (the sidebar does the same, :func:`gaia_viz.app.sidebar._kept`)."""
    name = getattr(draw, "__name__", "")
    if name in ("selectbox", "radio"):
        options = list(kwargs.get("options", ()))
        return {"index": options.index(value), **kwargs} if value in options else kwargs
    if name == "multiselect":
        options = list(kwargs.get("options", ()))
        return {"default": [v for v in value or () if v in options], **kwargs}
    if name in ("slider", "number_input"):
        return {"value": value, **kwargs}
    return kwargs


def _frozen(value):
    return tuple(value) if isinstance(value, list) else value


def drawn_widgets() -> frozenset[str]:
    """The widget keys drawn so far in this script run."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.shared.widget_user_keys_this_run.snapshot() if ctx is not None else frozenset()


def resend_undrawn_widgets(prefixes: tuple[str, ...] = (SIDEBAR_PREFIX, PAGE_PREFIX)) -> None:
    """At the start of a run, before anything is drawn: set again the value of every widget
    (keys starting with ``prefixes``) that the last run did not draw, and start recording
    what this run draws (:func:`note_drawn_widgets`).

    A run that stops early (``st.stop``: the set-up has an error, scores are missing) keeps
    the values of the widgets it did not reach, while the browser forgets them; drawn again,
    the browser showed the widget's default ("Choose options", the demo's OOD sets emptied)
    while the script went on with the kept value (the Run button listed the methods). Set
    again, the value is sent to the browser with the widget."""
    drawn = st.session_state.get(DRAWN_WIDGETS)
    st.session_state[DRAWN_WIDGETS] = set()
    st.session_state.setdefault(KEPT_SETUP, {})
    if drawn is None:
        return
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(prefixes) and k not in drawn]:
        value = st.session_state[key]
        if _plain_widget_value(key, value):
            _set_widget_value(key, value)


def _set_widget_value(key: str, value) -> None:
    from streamlit.errors import StreamlitAPIException

    try:
        st.session_state[key] = value
    except StreamlitAPIException:  # a button: its value cannot be set
        pass


def _plain_widget_value(key: str, value) -> bool:
    """False for markers, uploads (None or files) and other state that is no plain value."""
    return not (key.endswith("::seeded") or "upload" in key or not isinstance(value, (str, int, float, list, tuple)))


def restore_dropped_setup() -> None:
    """First thing in a run: put back each sidebar value Streamlit dropped since the last run
    (:func:`note_drawn_widgets` keeps them). On a page change Streamlit drops the state of every
    widget whose id the browser's request does not list, and a request sent while the previous
    run was still drawing (a click during a run, a link followed from a page still settling)
    listed only part of the sidebar: the set-up fell back to the widgets' own defaults (no OOD
    sets, center-crop, 0 samples a set). What the app itself removes (a link's set-up, later
    in the run) stays removed: the kept values are taken again at the end of each run."""
    for key, value in (st.session_state.get(KEPT_SETUP) or {}).items():
        if key not in st.session_state:
            _set_widget_value(key, value)


def note_drawn_widgets(*keys: str) -> None:
    """Record ``keys`` and every widget drawn so far in this run as drawn (for
    :func:`resend_undrawn_widgets`), and keep the sidebar's plain values (for
    :func:`restore_dropped_setup`). Both are changed in place: after a page's ``st.stop()``
    Streamlit refuses new session-state assignments, not changes to what is stored."""
    drawn = st.session_state.get(DRAWN_WIDGETS)
    if drawn is not None:
        drawn.update(drawn_widgets(), keys)
    kept = st.session_state.get(KEPT_SETUP)
    if kept is not None:
        kept.clear()
        kept.update((key, value) for key, value in setup_widgets().items() if _plain_widget_value(key, value))


# --------------------------------------------------------------------------- links



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
            from gaia_viz.app.markdown import escape_markdown

            st.warning(escape_markdown(message))


def show_link_warnings() -> None:
    """The link's warnings at the top of the page, until the user dismisses them."""
    from gaia_viz.app.markdown import escape_markdown

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
    if not history:
        params = _view_since_links_drawn(params)
    chosen, warnings = selection_from_query(params, known_methods)
    st.session_state[SELECTION] = chosen
    _remember_checks(params)
    for message in unknown_keys(params, setup_keys) + warnings:
        warn_link(message, draw=False)
    setup_params = {k: v for k, v in params.items() if k in setup_keys}
    changed = any(params.get(k) != written.get(k) for k in setup_keys)
    return LinkState(chosen, setup_params, had_view=False, setup_changed=changed)


def note_links_drawn() -> None:
    """Record the view this run draws its in-app links with (before the first is drawn)."""
    st.session_state[LINKS_DRAWN_WITH] = links.view_query(selection())


def _view_since_links_drawn(params: Mapping[str, str]) -> dict[str, str]:
    """A followed in-app link's parameters, with each view value the link was merely drawn with
    replaced by the session's current one. A fragment's rerun (the Tune threshold slider, the
    Evaluate figures) changes the view without redrawing the links of the full run: the
    sidebar's Inspect link still said ``tpr=0.9`` after the slider moved to 0.93, and
    following it undid the move. What the link itself changes (``image=`` of a hardest case)
    differs from what it was drawn with and is kept."""
    drawn = st.session_state.get(LINKS_DRAWN_WITH)
    if drawn is None:
        return dict(params)
    current = links.view_query(selection())
    fresh = {k: v for k, v in params.items() if k not in VIEW_KEYS or v != drawn.get(k)}
    for key in VIEW_KEYS:
        if params.get(key) == drawn.get(key) and key in current:
            fresh[key] = current[key]
    return fresh


def start_session(known_methods: Sequence[str], setup_keys: Sequence[str]) -> LinkState | None:
    """On a session's first run: read the link into the Selection (warnings kept for the
    page) and return it; None on every later run."""
    if SELECTION in st.session_state:
        return None
    params = st.query_params.to_dict()
    chosen, warnings = selection_from_query(params, known_methods)
    st.session_state[SELECTION] = chosen
    _remember_checks(params)
    for message in unknown_keys(params, setup_keys) + warnings:
        warn_link(message, draw=False)
    view_keys = {"methods", "layers", "inner_layers", "method", "tpr", "threshold", "image", "map_color",
                 "inspect_layer"}
    return LinkState(chosen, {k: v for k, v in params.items() if k in setup_keys},
                     had_view=bool(view_keys & set(params)))


# --------------------------------------------------------------------------- the set-up's link


def setup_widgets() -> dict:
    """The sidebar's widget values: ``{key: value}`` of every ``sb_*`` key in the session."""
    state = st.session_state
    return {key: state[key] for key in list(state) if isinstance(key, str) and key.startswith(SIDEBAR_PREFIX)}


def setup_query() -> dict[str, str]:
    """The set-up's query-string parameters (:func:`gaia_viz.app.links.setup_query`)."""
    return links.setup_query(setup_widgets())


def seed_setup(params: Mapping[str, str], warn: Callable[[str], None], complete: bool = False) -> None:
    """Set the sidebar's widgets from a link's set-up parameters (before they are drawn,
    :func:`gaia_viz.app.links.seeded_widgets`); ``warn(message)`` gets each value that could
    not be used. Only the keys whose value changed are written (an upload's cannot be)."""
    before = setup_widgets()
    after, warnings = links.seeded_widgets(params, before, complete)
    for key in before.keys() - after.keys():
        del st.session_state[key]
    for key, value in after.items():
        if key not in before or before[key] is not value:
            st.session_state[key] = value
    for message in warnings:
        warn(message)


__all__ = ["LinkState", "bound_widget", "check_link_against", "checked_layers", "drawn_widgets", "followed_link",
           "note_drawn_widgets", "note_links_drawn", "resend_undrawn_widgets", "restore_dropped_setup", "seed_setup",
           "selection", "session_token", "setup_query", "setup_widgets", "show_link_warnings", "start_session",
           "update_selection", "warn_link", "write_query"]
