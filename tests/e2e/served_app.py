"""A served app and a Chromium for it: what the browser tests and the interaction benchmark share.

``served_app`` starts ``streamlit run app.py`` on a free local port with its own run cache and
yields ``(url, process, log_path)``; ``chromium`` opens Debian's ``/usr/bin/chromium`` through
Playwright in a fresh profile (never a downloaded browser).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}
SERVER_START_S = 60
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'  # the page's script run finished
NAV = ".st-key-app_nav"  # the app's navigation: the sidebar's page links (each carries the whole view)


# what every browser test module is: marked e2e, skipped with its reason without Debian's chromium
BROWSER_MARKS = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent: the browser test drives "
                       "Debian's chromium (apt-get install chromium), it never downloads one"),
]


def browser_api():
    """playwright.sync_api, or the module skipped with the reason."""
    return pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                               "(pip install -r requirements-dev.txt)")


class ServerFailed(RuntimeError):
    """streamlit exited or did not answer; the message ends with its log's tail."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log_tail(log_path: Path, chars: int = 4000) -> str:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return text[-chars:]


@contextlib.contextmanager
def served_app(folder: Path, env: dict | None = None, launcher: bool = True):
    """The app as the README starts it, ``python -m gaia_viz.app`` (``launcher=False``: plain
    ``streamlit run app.py``), run cache in ``folder``; killed on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "streamlit.log"
    port = free_port()
    environment = dict(os.environ, GAIA_VIZ_CACHE_DIR=str(folder / "cache"), PYTHONUNBUFFERED="1", **(env or {}))
    start = ["-m", "gaia_viz.app"] if launcher else ["-m", "streamlit", "run", "app.py"]
    command = [sys.executable, *start,
               "--server.address", "127.0.0.1", "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false",
               # other edits to the working tree must not rerun the app mid-test
               "--server.fileWatcherType", "none", "--server.runOnSave", "false",
               "--client.toolbarMode", "viewer"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        health = f"http://127.0.0.1:{port}/_stcore/health"
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                raise ServerFailed(f"streamlit exited with code {process.returncode}:\n{log_tail(log_path)}")
            try:
                with urllib.request.urlopen(health, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"streamlit did not answer {health} within {SERVER_START_S} s:\n"
                                   f"{log_tail(log_path)}")
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/", process, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@contextlib.contextmanager
def chromium(playwright, profile_dir: Path, timeout_ms: float, viewport: dict | None = None):
    """A Chromium browser context in a fresh profile (an explicit temporary --user-data-dir)."""
    context = playwright.chromium.launch_persistent_context(
        user_data_dir=str(profile_dir), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
        viewport=viewport or VIEWPORT, accept_downloads=False)
    try:
        context.set_default_timeout(timeout_ms)
        yield context
    finally:
        context.close()
