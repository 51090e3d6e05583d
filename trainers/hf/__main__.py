"""``python -m trainers.hf --listen HOST:PORT``: the hf TrainerService."""

import sys

from trainers.hf.adapter import HFAdapter
from trainers.runtime.server import main

sys.exit(main(HFAdapter()))
