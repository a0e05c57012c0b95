"""Reversible monkey-patching with an exact undo.

A :class:`Patch` remembers what the owner's ``__dict__`` held before (or that
it held nothing, when the attribute was inherited) and puts exactly that back.
If another library wrapped on top of ours in the meantime, removing ours would
remove theirs too; then our wrapper stays in place and, with poolscope
inactive, just calls through.
"""

from __future__ import annotations

from typing import Any, Final

from ._safety import logger

__all__ = ["BeneathPatch", "Patch"]

_MISSING: Final = object()


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
