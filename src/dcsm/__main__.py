"""``python -m dcsm``."""

import sys

from dcsm.cli import main

sys.exit(main())
