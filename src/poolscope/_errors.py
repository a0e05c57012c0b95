"""Exceptions raised by poolscope.

Exception tree::

    ValueError
     └── ConfigurationError   a setting or argument is invalid; raised at set-up time

poolscope never raises into the host application's request path: failures of
its own bookkeeping are logged once (see ``_safety``) and the user's call
proceeds.
"""

from __future__ import annotations

__all__ = ["ConfigurationError"]


class ConfigurationError(ValueError):
    """A poolscope setting, keyword or environment variable has a bad value."""
