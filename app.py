"""gaia-viz: explore GAIA out-of-distribution detection. Run with ``streamlit run app.py``.

Opens on the home page with the embedded demo (a digit CNN, real digits vs. five real OOD
sets): no set-up, no download. Everything around the pages (start-up, navigation, the
sidebar, run status, the link in the address bar) is in :mod:`gaia_viz.app.shell`.
"""

from gaia_viz.app.shell import run_app

run_app()
