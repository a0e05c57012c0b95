"""``python -m poolscope``: the same as the ``poolscope`` command."""

import sys

from ._cli._main import main

sys.exit(main())
