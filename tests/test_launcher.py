"""``python -m gaia_viz.app``: ``streamlit run app.py`` with the page code imported while the
server starts (torch and torchvision take about 3 s on 2 cores; without this the first visitor's
first page run pays for them)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from support import ROOT


def test_the_launcher_runs_streamlit_on_app_py_with_the_options_given(monkeypatch):
    from gaia_viz.app import __main__ as launcher

    started, ran = [], {}
    monkeypatch.setattr(launcher.threading.Thread, "start", lambda self: started.append(self.name))
    monkeypatch.setattr(launcher.streamlit_cli, "main", lambda: ran.setdefault("argv", list(sys.argv)) and 0)
    monkeypatch.setattr(sys, "argv", ["python"])
    assert launcher.main(["--server.port", "8502"]) == 0
    assert ran["argv"] == ["streamlit", "run", str(ROOT / "app.py"), "--server.port", "8502"]
    assert started == ["gaia-viz-imports"]  # the imports go on beside the server, not before it


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/<pid>/maps (Linux)")
def test_torch_is_loaded_before_any_visitor_connects():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "gaia_viz.app", "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        loaded = False
        while time.monotonic() < deadline and not loaded:
            assert server.poll() is None, f"the launcher exited with {server.returncode}"
            loaded = "libtorch_cpu" in Path(f"/proc/{server.pid}/maps").read_text()
            time.sleep(0.5)
        assert loaded, "torch was not loaded within 120 s of the start, with no visitor"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as response:
            assert response.status == 200  # and the server answers
    finally:
        server.terminate()
        server.wait(timeout=30)
