"""``python -m gracehttp``: the same command line as the ``gracehttp`` script."""

import sys

from gracehttp.cli import main

sys.exit(main())
