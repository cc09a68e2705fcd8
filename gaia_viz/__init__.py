"""gaia-viz: GAIA out-of-distribution detection (Chen et al., NeurIPS 2023) as a library.

The core (``gaia``, ``models``, ``data``, ``detectors``, ``metrics``) imports without
streamlit or plotly. Figures live in ``gaia_viz.figures`` and need plotly.
"""

__version__ = "0.1.0"
