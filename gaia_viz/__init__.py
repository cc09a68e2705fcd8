"""gaia-viz: GAIA out-of-distribution detection (Chen et al., NeurIPS 2023) as a library.

The core (``gaia``, ``models``, ``data``, ``detectors``, ``metrics``) imports without
streamlit or plotly. Figures live in ``gaia_viz.figures`` and need plotly.
"""

import os
import sys

__version__ = "0.1.0"

# OpenMP threads that wait for work by spinning, torch's default, collapse when the cores are
# shared: the demo evaluation took 20-38 s instead of 4.6 s on 2 busy cores (the app's server
# scoring while other sessions' runs, loader workers or other programs use the CPU). Waiting
# passively keeps it at 4.6 s there. OpenMP reads this once, when torch loads, so it is set only
# when torch is not loaded yet and the user did not choose.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
