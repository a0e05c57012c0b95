"""Never break the host: report poolscope's own failures once, then carry on."""

from __future__ import annotations

import logging
import threading

__all__ = ["logger", "report_internal_error"]

logger = logging.getLogger("poolscope")

_reported: set[str] = set()
_reported_lock = threading.Lock()


def report_internal_error(where: str) -> None:
    """Log the exception being handled, once per ``where``, with its traceback.

    Called from ``except Exception`` blocks around poolscope's bookkeeping: the
    user's call must proceed untouched, and a broken exporter or provider must
    not flood the log once per offload.
    """
    with _reported_lock:
        if where in _reported:
            return
        _reported.add(where)
    logger.exception(
        "poolscope: internal error in %s; the application call proceeds, "
        "further errors here are not logged again",
        where,
    )
