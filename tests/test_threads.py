"""OpenMP's waiting threads: the app asks for passive waits unless the user chose
(gaia_viz/app/__init__.py); the library and the CLI keep torch's default.

Spinning waits, torch's default, made the app's demo evaluation take 20-38 s instead of 4.6 s on
2 busy cores; passive waits kept it at 4.6 s (and cost about 25 % on an idle machine, where the
CLI and the library run alone). The variable only counts before torch loads.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import os, sys; {first}; print(os.environ.get('OMP_WAIT_POLICY'))"


def _policy(first: str, **env) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    result = subprocess.run([sys.executable, "-c", PROBE.format(first=first)], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.strip()


def test_the_app_asks_for_passive_waits_before_torch_loads():
    assert _policy("import gaia_viz.app.shell; import torch") == "PASSIVE"


def test_the_library_and_the_cli_keep_torchs_default():
    assert _policy("import gaia_viz.sweep, gaia_viz.cli") == "None"


def test_the_users_choice_is_kept():
    assert _policy("import gaia_viz.app", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_nothing_is_set_once_torch_is_loaded_it_would_not_count():
    assert _policy("import torch; import gaia_viz.app") == "None"
