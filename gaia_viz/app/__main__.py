"""Start the explorer: ``python -m gaia_viz.app [streamlit run options]``.

The same as ``streamlit run app.py [options]``, except that the code every page needs (torch,
torchvision, the models, data and sweep; about 3 s on 2 cores) is imported in the background
while the server starts, instead of in the first visitor's first page run: Streamlit runs
``app.py`` only when a browser connects.
"""

import sys
import threading

from streamlit.web import cli as streamlit_cli

from gaia_viz.settings import REPO_ROOT


def _import_page_code() -> None:
    import gaia_viz.app.sidebar  # noqa: F401  (torch, torchvision, the models and data)
    import gaia_viz.figures  # noqa: F401  (plotly)
    import gaia_viz.sweep  # noqa: F401
    from gaia_viz.app.heap import freeze_long_lived

    freeze_long_lived()


def main(argv: list[str]) -> int:
    threading.Thread(target=_import_page_code, name="gaia-viz-imports", daemon=True).start()
    sys.argv = ["streamlit", "run", str(REPO_ROOT / "app.py"), *argv]
    return streamlit_cli.main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
