"""``python -m server`` is ``openanalyst``."""

import sys

from server.cli import main

sys.exit(main())
