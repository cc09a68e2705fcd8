"""Markdown escaping (user strings shown literally) and no tracebacks when served.

Which server paths a visitor may name is decided in the core, :mod:`gaia_viz.paths`
(:func:`gaia_viz.paths.check_allowed`, the one function that answers "may this path be
read"); every text box, link parameter and upload path the app turns into a server path goes
through it, and the library's folder walks and sources ask it too.

File names, folder names and class names come from the user too; Streamlit renders
``st.error``/``st.markdown``/captions as Markdown, so they go through
:func:`escape_markdown` to be shown literally.
"""

from __future__ import annotations

import re

import streamlit as st

from gaia_viz.paths import served

HIDDEN_ERROR_DETAILS = "none"  # Streamlit shows only a generic message: no type, text or traceback


_shown_before: list = []  # the configured value, kept while this module hides error details


def hide_error_details_when_served() -> bool:
    """When the app is served beyond this machine (:func:`gaia_viz.paths.served`), set
    Streamlit's ``client.showErrorDetails`` to ``"none"``: an unexpected exception shows a
    generic message instead of a traceback with server paths (the details still go to the
    server's log); when it is not (any more), give back the configured value. Returns whether
    details are hidden. Called at the start of every run (gaia_viz.app.shell)."""
    if served():
        if not _shown_before:
            _shown_before.append(st.get_option("client.showErrorDetails"))
        st.set_option("client.showErrorDetails", HIDDEN_ERROR_DETAILS)
        return True
    if _shown_before:
        st.set_option("client.showErrorDetails", _shown_before.pop())
    return False


# Characters that start Markdown (and GitHub-flavoured / Streamlit) constructs: emphasis,
# code, links and images, raw HTML and autolinks, tables, strikethrough, LaTeX, headings.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>!|~$#{}])")
_LINE_START_MARKER = re.compile(r"^(\s*\d*)([-+=.)])")


def escape_markdown(text: object) -> str:
    """``text`` with Markdown syntax backslash-escaped, on one line, so Streamlit shows it
    literally (``<img src=x>`` stays text, ``**x**`` stays asterisks)."""
    flat = " ".join(str(text).splitlines())
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", flat)
    # list items and setext headings are made only by a marker at the start of the line
    return _LINE_START_MARKER.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped, count=1)
