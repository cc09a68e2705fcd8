"""What streamlit.testing's AppTest does differently from a browser session, made the same.

Used by the app tests and by benchmarks/bench_interaction.py (so both measure what a browser gets).
"""

from __future__ import annotations

import contextlib


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
