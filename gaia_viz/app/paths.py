"""Which server paths a browser visitor may name, and how user strings are shown safely.

The sidebar takes folder paths, checkpoint paths and a data root as text. On a laptop
(the app served on 127.0.0.1) that is the user's own machine and anything goes. Served to
others, a visitor could type ``/etc`` or ``~/.ssh`` and have the app read it, so every
such path must then lie under one of the *allowed data roots*:

* ``$GAIA_VIZ_ALLOWED_ROOTS`` (``os.pathsep``-separated folders) when set;
* otherwise the server user's home folder and the data root (``$GAIA_VIZ_DATA_ROOT``, else
  the shared data folder next to the repository).

The check is active when ``GAIA_VIZ_ALLOWED_ROOTS`` is set explicitly, or when Streamlit's
``server.address`` is not a loopback address (unset counts as not loopback: Streamlit then
listens on every interface). Paths are compared after resolving ``~``, ``..`` and symlinks,
so a symlink inside a root that points outside it is refused.

File names, folder names and class names come from the user too; Streamlit renders
``st.error``/``st.markdown``/captions as Markdown, so they go through
:func:`escape_markdown` to be shown literally.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from gaia_viz.errors import DataError
from gaia_viz.settings import ALLOWED_ROOTS_ENV, data_root

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def _server_address() -> str | None:
    try:
        import streamlit as st

        return st.get_option("server.address")
    except Exception:  # streamlit absent or its config unreadable: no server to protect
        return "127.0.0.1"


def is_loopback(address: str | None) -> bool:
    """True for ``127.x.x.x``, ``::1`` and ``localhost``; False for None/empty (all interfaces)."""
    if not address:
        return False
    address = address.strip().strip("[]")
    if address.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def restriction_active() -> bool:
    """Whether paths are limited to :func:`allowed_roots` (see the module docstring)."""
    if os.environ.get(ALLOWED_ROOTS_ENV, "").strip():
        return True
    return not is_loopback(_server_address())


def allowed_roots() -> list[Path]:
    """The allowed data roots, resolved: ``$GAIA_VIZ_ALLOWED_ROOTS`` or home + data root."""
    configured = os.environ.get(ALLOWED_ROOTS_ENV, "").strip()
    if configured:
        candidates = [Path(p).expanduser() for p in configured.split(os.pathsep) if p.strip()]
    else:
        candidates = [Path.home()]
        root = data_root()
        if root is not None:
            candidates.append(root)
    roots = []
    for candidate in candidates:
        resolved = candidate.resolve()
        if resolved not in roots:
            roots.append(resolved)
    return roots


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_allowed(path: str | os.PathLike) -> Path:
    """``path`` resolved (``~``, ``..``, symlinks), or DataError when it is outside the roots.

    Without an active restriction every path is allowed (only resolved).
    """
    resolved = Path(path).expanduser().resolve()
    if not restriction_active():
        return resolved
    roots = allowed_roots()
    if any(_within(resolved, root) for root in roots):
        return resolved
    raise DataError(
        f"{path} is outside the allowed data roots ({', '.join(map(str, roots)) or 'none'}); "
        f"choose a path under one of them, or set {ALLOWED_ROOTS_ENV} on the server"
    )


def spec_paths(spec: str) -> list[str]:
    """The server paths a data-source spec string names (``folder:``, ``images:``, a bare
    path); none for ``demo:`` and ``torchvision:`` (those read under the data root)."""
    spec = str(spec).strip()
    kind, _, rest = spec.partition(":")
    if kind in ("demo", "torchvision"):
        return []
    if kind == "folder":
        return [rest]
    if kind == "images":
        return [p for p in rest.split(",") if p.strip()]
    return [spec] if spec else []


def check_spec_allowed(spec: str) -> None:
    """DataError when a path named by ``spec`` is outside the allowed roots."""
    for path in spec_paths(spec):
        check_allowed(path.strip())


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
