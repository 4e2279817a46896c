"""``python -m clear_bench`` (used under torchrun): the same as the ``clear-bench`` console script."""

import sys

from clear_bench.cli import main

sys.exit(main())
