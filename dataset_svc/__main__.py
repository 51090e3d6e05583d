"""``python -m dataset_svc --listen HOST:PORT``: AuthService, DatasetService, CompatibilityService."""

import sys

from dataset_svc.server import main

sys.exit(main())
