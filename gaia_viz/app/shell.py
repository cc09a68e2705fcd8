"""The app around every page: start-up, navigation, the sidebar, run status and the link.

The navigation is the sidebar's list of page links (``st.navigation`` is hidden): each link
carries the whole view (:func:`gaia_viz.app.page.page_link`), so a page switch is one
browser-history entry and keeps the address bar's view.

``app.py`` calls :func:`run_app`. Every page file starts with :func:`page_guard`, because a
link to a page can reach Streamlit before ``app.py`` ever ran in the process: with a
``pages/`` folder beside the main script, Streamlit's automatic multipage handling serves a
freshly started server's first request for ``/Evaluate`` by running ``pages/2_Evaluate.py``
alone (compare streamlit/streamlit#9624). The guard sees that no app shell is running in this
script run and runs the shell with that page instead, so every link opens the same app:
page config, navigation, sidebar and start-up included.
"""

from __future__ import annotations

import threading
from pathlib import Path

import streamlit as st

from gaia_viz.settings import REPO_ROOT

PAGES = (
    ("pages/0_Home.py", "Home", ":material/home:"),
    ("pages/1_Inspect.py", "Inspect", ":material/image_search:"),
    ("pages/2_Evaluate.py", "Evaluate", ":material/analytics:"),
    ("pages/3_Tune_threshold.py", "Tune threshold", ":material/tune:"),
    ("pages/4_Channels_and_layers.py", "Channels and layers", ":material/grid_on:"),
    ("pages/5_How_GAIA_works.py", "How GAIA works", ":material/school:"),
    ("pages/6_Real_data_report.py", "Real-data report", ":material/table_chart:"),
    ("pages/7_Data_map.py", "Data map", ":material/scatter_plot:"),
)
_ACTIVE = threading.local()  # set while run_app runs in this script-runner thread


def _start_up() -> None:
    """Every run (both are cheap and idempotent): keep freed memory for GAIA's backward passes
    (gaia_viz.allocator) and, when served to others, no tracebacks with server paths in the
    browser (gaia_viz.app.markdown)."""
    from gaia_viz.allocator import retain_freed_memory
    from gaia_viz.app.markdown import hide_error_details_when_served

    retain_freed_memory()
    hide_error_details_when_served()


def _preload_chart_library() -> None:
    """Draw a hidden, empty Plotly chart on a session's first run, so the browser loads
    Streamlit's Plotly chunk (4.7 MB of JavaScript, loaded lazily with the first chart) while
    the run is still going (its imports, the demo evaluation) instead of after it. In a test app on
    this 2-core machine (under load), a session's first chart took 2.8 s to appear after its
    click, 0.6 s with the chunk loaded this way."""
    from gaia_viz.app import keys

    if st.session_state.get(keys.CHART_LIBRARY_SENT):
        return
    st.session_state[keys.CHART_LIBRARY_SENT] = True
    import plotly.graph_objects as go

    with st.sidebar.container(key="chart_preload"):
        st.html("<style>.st-key-chart_preload {display: none;}</style>")
        st.plotly_chart(go.Figure(), key="chart_preload_figure", config={"staticPlot": True})


def _request_names_a_page() -> bool:
    """True when this run's request names a page (a URL path like /Evaluate, or a page's
    hash after a click): Streamlit then finds that page among the navigation's pages."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    manager = getattr(get_script_run_ctx(), "pages_manager", None)
    return bool(manager is not None and (manager.intended_page_name or manager.intended_page_script_hash))


def page_path(name: str) -> Path:
    return REPO_ROOT / name


def run_app(current_page: str | None = None) -> None:
    """Draw the app with ``current_page`` (a path under the repository, as in :data:`PAGES`)
    as the page to show when the request names none."""
    from gaia_viz.app import sidebar as sidebar_module
    from gaia_viz.app import state
    from gaia_viz.app.heap import freeze_after_first_run
    from gaia_viz.app.keys import AUTO_RUN
    from gaia_viz.app.links import SETUP_QUERY_KEYS
    from gaia_viz.app.page import link_query, page_link, render_status
    from gaia_viz.sweep import ALL_METHODS

    _ACTIVE.on = True
    try:
        _start_up()
        st.set_page_config(page_title="gaia-viz: GAIA OOD detection", page_icon=":material/radar:",
                           layout="wide")
        state.restore_dropped_setup()  # before the link: what it removes stays removed
        link = state.start_session(list(ALL_METHODS), SETUP_QUERY_KEYS)
        if link is not None:
            state.seed_setup(link.setup_params, lambda message: state.warn_link(message, draw=False))
            st.session_state[AUTO_RUN] = link.had_view
        elif (followed := state.followed_link(list(ALL_METHODS), SETUP_QUERY_KEYS)) is not None:
            if followed.setup_changed:  # Back/Forward to another set-up: absent parameters are defaults
                state.seed_setup(followed.setup_params,
                                 lambda message: state.warn_link(message, draw=False), complete=True)
        state.resend_undrawn_widgets()
        # The page to show is the default only when the request names none: the default
        # page's URL is "/", so a request for /Evaluate would find no page of that name and
        # Streamlit would show "Page not found" over the right page.
        current = Path(current_page).resolve() if current_page and not _request_names_a_page() else None
        pages = [st.Page(str(page_path(path)), title=title, icon=icon,
                         default=(page_path(path).resolve() == current) if current else index == 0)
                 for index, (path, title, icon) in enumerate(PAGES)]
        # Streamlit's own navigation drops the query string on every page switch (and the
        # view written back then was a second history entry): the sidebar's links are page
        # links carrying the whole view instead, one history entry per switch.
        navigation = st.navigation(pages, position="hidden")
        nav_box = st.sidebar.container(key="app_nav")
        _preload_chart_library()  # first: the sidebar's imports and the page's run take seconds
        state.check_link_against(sidebar_module.sidebar())
        state.note_drawn_widgets()
        state.note_links_drawn()
        with nav_box:
            for path, title, icon in PAGES:
                page_link(path, title, icon=icon, width="stretch")
        # Written before the page runs: after a page's st.stop() nothing more reaches the
        # browser (the callbacks that change the view ran before this run started).
        state.write_query(link_query())
        render_status()
        state.show_link_warnings()
        try:
            navigation.run()
        finally:
            state.note_drawn_widgets()
            state.write_query(link_query())  # what the page itself changed, when it finished
    finally:
        _ACTIVE.on = False
        freeze_after_first_run()  # the run imported torch and the rest (gaia_viz.app.heap)


def write_link() -> None:
    """Mirror the set-up and the view in the address bar. Every app run ends with it; a
    fragment that changes the view (a slider) calls it too, as its rerun skips the app."""
    from gaia_viz.app import state
    from gaia_viz.app.page import link_query

    state.write_query(link_query())


def page_guard(page_file: str) -> None:
    """First line of every page: inside the app shell, nothing; run on its own (a first
    request straight to a page, or a test), run the whole app with this page, then stop."""
    if getattr(_ACTIVE, "on", False):
        return
    run_app(current_page=page_file)
    st.stop()


__all__ = ["PAGES", "page_guard", "run_app", "write_link"]
