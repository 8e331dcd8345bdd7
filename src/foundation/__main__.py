"""``python -m foundation``: the ``foundation`` command line (see :mod:`foundation.cli.main`)."""

import contextlib
import sys

from foundation.cli.main import main

with contextlib.suppress(BrokenPipeError):
    sys.exit(main())
