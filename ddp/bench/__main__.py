"""``python -m ddp.bench ...`` is the ``ddp-bench`` command."""
import sys

from ddp.bench.cli import main

sys.exit(main())
