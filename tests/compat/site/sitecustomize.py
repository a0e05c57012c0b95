"""CPython's test runner loads no plugins: poolscope comes on as the interpreter starts."""

import os

if os.environ.get("POOLSCOPE_COMPAT_SITE") == "1":
    import poolscope_compat

    poolscope_compat.activate()
