"""OpenMP's waiting threads: gaia_viz asks for passive waits unless the user chose (gaia_viz/__init__.py).

Spinning waits, torch's default, made the demo evaluation take 20-38 s instead of 4.6 s on 2 busy
cores; passive waits kept it at 4.6 s. The variable only counts before torch loads.
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


def test_importing_gaia_viz_before_torch_asks_for_passive_waits():
    assert _policy("import gaia_viz; import torch") == "PASSIVE"


def test_the_users_choice_is_kept():
    assert _policy("import gaia_viz", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_nothing_is_set_once_torch_is_loaded_it_would_not_count():
    assert _policy("import torch; import gaia_viz") == "None"
