"""Streamlit glue shared by the pages (imports streamlit; never imported by the core)."""

import os
import sys

# The served app's runs share the CPU: several sessions' evaluations in one process, the
# browser on the same machine, loader workers. OpenMP threads that wait by spinning, torch's
# default, collapse there: the demo evaluation took 20-38 s instead of 4.6 s on 2 cores busy
# with other work, 3.3-7.5 s instead of 1.7-2.2 s next to two busy processes. Passive waits cost
# the app about 0.25 s of the demo's 1 s on an idle machine, so the library and the CLI (a
# process that has the machine to itself) keep torch's default. OpenMP reads this once, when
# torch loads: it is set only when torch is not loaded yet and the user did not choose.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
