"""``python -m xares_fusion.cli``: the `xares-fusion` command (as used under torchrun / accelerate)."""

import sys

from . import main

sys.exit(main())
