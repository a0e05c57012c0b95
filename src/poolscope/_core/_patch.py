"""Reversible monkey-patching with an exact undo.

A :class:`Patch` remembers what the owner's ``__dict__`` held before (or that
it held nothing, when the attribute was inherited) and puts exactly that back.
If another library wrapped on top of ours in the meantime, removing ours would
remove theirs too; then our wrapper stays in place ("stranded") and, with
poolscope inactive, just calls through. Instrumenting again reuses a stranded
wrapper still in the chain instead of stacking a second one above the other
library's, which would record every task twice.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from .._safety import logger

__all__ = ["BeneathPatch", "Patch", "inside_instrumentation", "install"]

_MISSING: Final = object()
_MAX_CHAIN: Final = 16  # wrappers followed through ``__wrapped__``, bounded against cycles
_stranded: list[Patch] = []


class Patch:
    __slots__ = ("attribute", "original", "owner", "replacement")

    def __init__(self, owner: Any, attribute: str, replacement: Any) -> None:
        self.owner = owner
        self.attribute = attribute
        self.original = owner.__dict__.get(attribute, _MISSING)
        self.replacement = replacement

    def apply(self) -> None:
        setattr(self.owner, self.attribute, self.replacement)

    def revert(self) -> None:
        current = self.owner.__dict__.get(self.attribute, _MISSING)
        if current is not self.replacement:
            _stranded.append(self)
            logger.warning(
                "poolscope: %s.%s was wrapped again by another library after poolscope; "
                "leaving poolscope's wrapper in place as a pass-through",
                getattr(self.owner, "__qualname__", self.owner),
                self.attribute,
            )
            return
        if self.original is _MISSING:
            delattr(self.owner, self.attribute)
        else:
            setattr(self.owner, self.attribute, self.original)

    def in_chain(self) -> bool:
        """Whether our wrapper is still reached from ``owner.attribute``, under other wrappers."""
        current = self.owner.__dict__.get(self.attribute, _MISSING)
        for _ in range(_MAX_CHAIN):
            if current is self.replacement:
                return True
            try:
                current = getattr(current, "__wrapped__", _MISSING)
            except Exception:  # a proxy whose attribute access fails: the chain ends here
                return False
            if current is _MISSING:
                return False
        return False


def install(patch: Patch) -> Patch:
    """Apply ``patch``, or bring back a stranded wrapper of ours for the same attribute.

    Returns the patch now in effect, to be reverted on uninstrument.
    """
    for stranded in list(_stranded):
        if stranded.owner is not patch.owner or stranded.attribute != patch.attribute:
            continue
        _stranded.remove(stranded)
        if stranded.in_chain():
            return stranded  # it records again as soon as poolscope is active
        if stranded.owner.__dict__.get(stranded.attribute, _MISSING) is not stranded.original:
            logger.warning(
                "poolscope: the wrapper another library put on %s.%s hides what it wraps "
                "(no __wrapped__); poolscope's earlier wrapper may be beneath it, and tasks "
                "through both would be recorded twice",
                getattr(stranded.owner, "__qualname__", stranded.owner),
                stranded.attribute,
            )
    patch.apply()
    return patch


class BeneathPatch(Patch):
    """Goes *under* a wrapt wrapper another instrumentation installed first.

    Used where poolscope must run inside that wrapper (to find the span it
    makes): the wrapper's ``__wrapped__`` is swapped. On revert it is swapped
    back, and if the other instrumentation was removed first (leaving our
    wrapper on ``owner.attribute`` where it put its ``__wrapped__`` back), the
    original goes back there instead.
    """

    __slots__ = ("outer",)

    def __init__(self, owner: Any, attribute: str, outer: Any, replacement: Any) -> None:
        self.owner = owner
        self.attribute = attribute
        self.outer = outer
        self.original = outer.__wrapped__
        self.replacement = replacement

    def apply(self) -> None:
        self.outer.__wrapped__ = self.replacement

    def revert(self) -> None:
        if self.outer.__wrapped__ is self.replacement:
            self.outer.__wrapped__ = self.original
        if self.owner.__dict__.get(self.attribute) is self.replacement:
            setattr(self.owner, self.attribute, self.original)


def _is_opentelemetry_wrapper(value: Any, package: str) -> bool:
    """A wrapt wrapper that an OpenTelemetry instrumentation in ``package`` installed."""
    wrapper = getattr(value, "_self_wrapper", None)
    while isinstance(wrapper, functools.partial):  # httpx's instrumentation binds its settings
        wrapper = wrapper.func
    module = getattr(wrapper, "__module__", "") or ""
    return hasattr(value, "__wrapped__") and module.startswith(package)


def inside_instrumentation(
    owner: Any,
    attribute: str,
    wrap: Any,
    package: str = "opentelemetry.instrumentation.",
) -> Patch:
    """A patch that puts ``wrap(original)`` on ``owner.attribute``, *inside* the wrapt
    wrapper an OpenTelemetry instrumentation (from ``package``) put there first.

    Inside it, the instrumentation's span is current when poolscope runs, so poolscope
    enriches that span instead of making a second one. Installed after poolscope, such
    a wrapper goes around poolscope's by itself: either order ends the same.
    """
    current = vars(owner)[attribute]
    if _is_opentelemetry_wrapper(current, package):
        return BeneathPatch(owner, attribute, current, wrap(current.__wrapped__))
    return Patch(owner, attribute, wrap(getattr(owner, attribute)))
