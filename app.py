"""gaia-viz: explore GAIA out-of-distribution detection. Run with ``streamlit run app.py``.

Opens on the embedded demo (a digit CNN, real digits vs. five real OOD sets): no set-up, no
download. The sidebar (gaia_viz.app.setup) is drawn here once per run, so its choices hold on
every page; the pages get the resulting Setup from gaia_viz.app.setup.current_setup().
"""

from pathlib import Path

import streamlit as st

from gaia_viz.allocator import retain_freed_memory
from gaia_viz.app.paths import hide_error_details_when_served
from gaia_viz.app.setup import sidebar

hide_error_details_when_served()  # served to others: no tracebacks with server paths in the browser
retain_freed_memory()  # GAIA's backward passes stay free of page faults (see gaia_viz.allocator)

HERE = Path(__file__).resolve().parent
PAGES = (
    ("pages/1_Inspect.py", "Inspect", ":material/image_search:"),
    ("pages/2_Evaluate.py", "Evaluate", ":material/analytics:"),
    ("pages/3_Tune_threshold.py", "Tune threshold", ":material/tune:"),
    ("pages/4_Channels_and_layers.py", "Channels and layers", ":material/grid_on:"),
    ("pages/5_How_GAIA_works.py", "How GAIA works", ":material/school:"),
    ("pages/6_Real_data_report.py", "Real-data report", ":material/table_chart:"),
)

st.set_page_config(page_title="gaia-viz: GAIA OOD detection", page_icon=":material/radar:", layout="wide")
navigation = st.navigation([st.Page(str(HERE / path), title=title, icon=icon)
                            for path, title, icon in PAGES if (HERE / path).is_file()])
sidebar()
navigation.run()
