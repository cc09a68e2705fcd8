import sys

from gaia_viz.cli import main

sys.exit(main())
