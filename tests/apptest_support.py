"""What streamlit.testing's AppTest does differently from a browser session, made the same.

Used by the app tests and by benchmarks/bench_interaction.py (so both measure what a browser gets).
Also the app tests' way in: ``open_app`` opens ``app.py`` (on a page, as a user's link would),
``go`` switches page, ``settle`` waits for the background runs and reruns, as the page's own
status fragment does in a browser.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"  # this file is also imported as tests.apptest_support
SAMPLES = 100
TIMEOUT = 120
PAGES = {"home": "pages/0_Home.py", "inspect": "pages/1_Inspect.py", "evaluate": "pages/2_Evaluate.py",
         "tune": "pages/3_Tune_threshold.py", "channels": "pages/4_Channels_and_layers.py",
         "map": "pages/7_Data_map.py"}


def settle(at):
    """Wait for the background runs this page started, then rerun (what the status fragment does)."""
    from gaia_viz.app import jobs

    jobs.wait_for_jobs(TIMEOUT)
    return at.run()


def open_app(page: str | None = None, samples: int = SAMPLES, query: dict | None = None, **state):
    """``app.py`` with ``samples`` images a set, the session ``state`` and the ``query`` string
    set, on ``page`` (a key of :data:`PAGES`) when given, its runs settled."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["sb_max_samples"] = samples
    for key, value in state.items():
        at.session_state[key] = value
    if query:
        at.query_params.update(query)
    if page is not None:
        at.run()
        at.switch_page(PAGES[page])
    return settle(at.run())


def go(at, page: str):
    """Switch to ``page`` (a key of :data:`PAGES`) and settle."""
    at.switch_page(PAGES[page])
    return settle(at.run())


@contextlib.contextmanager
def navigation_pages_kept():
    """A browser session keeps one PagesManager, so a fragment rerun still knows st.navigation's
    pages (an st.page_link inside a fragment resolves); AppTest builds a new one per run."""
    from streamlit.runtime.pages_manager import PagesManager

    last = {}
    real_set, real_get = PagesManager.set_pages_and_resolve, PagesManager.get_pages

    def set_pages_and_resolve(self, *args, **kwargs):
        result = real_set(self, *args, **kwargs)
        last["pages"] = self._pages
        return result

    def get_pages(self):
        if self._pages is None and last.get("pages"):
            return dict(last["pages"])
        return real_get(self)

    PagesManager.set_pages_and_resolve, PagesManager.get_pages = set_pages_and_resolve, get_pages
    try:
        yield
    finally:
        PagesManager.set_pages_and_resolve, PagesManager.get_pages = real_set, real_get


def fragment_rerun(at, key: str):
    """Make the next ``at.run()`` a rerun of fragment ``key`` only, as the browser sends after a
    widget inside that fragment changed (AppTest itself always reruns the whole script).
    Returns the undo."""
    from streamlit.testing.v1 import local_script_runner

    storage = at._fragment_storage
    ids = list(storage._ids_by_target_key.get(key, {}))
    if not ids:
        raise LookupError(f"fragment {key!r} is not on the page: {sorted(storage._ids_by_target_key)}")
    newest = max(ids, key=storage._registration_sequence_by_id.get)  # the last run's
    real = local_script_runner.RerunData
    local_script_runner.RerunData = lambda **kwargs: real(**kwargs, fragment_id_queue=[newest])
    return lambda: setattr(local_script_runner, "RerunData", real)
