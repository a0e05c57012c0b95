"""``python -m poolscope``: the same as the ``poolscope`` command."""

import sys

from ._cli import main

sys.exit(main())
