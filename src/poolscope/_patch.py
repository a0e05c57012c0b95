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

__all__ = ["Patch"]

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
