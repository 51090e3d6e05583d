"""``python -m trainers.ultralytics --listen HOST:PORT``: the ultralytics TrainerService."""

import sys

from trainers.runtime.server import main
from trainers.ultralytics.adapter import UltralyticsAdapter

sys.exit(main(UltralyticsAdapter()))
