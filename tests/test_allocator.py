"""gaia_viz.allocator: the opt-in is idempotent, reported, and a no-op where it cannot apply.

Its effect (no page faults in GAIA's backward passes) depends on the heap's history, so it
is measured by benchmarks/bench_scoring.py (faults per call), not asserted here.
"""

import subprocess
import sys
import textwrap

import pytest

from gaia_viz import allocator

from support import ROOT as REPO


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
def test_retain_on_linux_is_idempotent_and_reported():
    script = textwrap.dedent("""
        from gaia_viz.allocator import freed_memory_retained, retain_freed_memory
        assert not freed_memory_retained()
        assert retain_freed_memory() and retain_freed_memory()
        assert freed_memory_retained()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_off_linux_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    monkeypatch.setattr(allocator, "_retained", False)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *_: pytest.fail("libc was touched"))
    assert allocator.retain_freed_memory() is False
    assert allocator.freed_memory_retained() is False
