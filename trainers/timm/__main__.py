"""``python -m trainers.timm --listen HOST:PORT``: the timm TrainerService."""

import sys

from trainers.runtime.server import main
from trainers.timm.adapter import TimmAdapter

sys.exit(main(TimmAdapter()))
