"""``python -m visionmesh.cli`` is ``vmesh``."""

import sys

from visionmesh.cli import main

sys.exit(main())
