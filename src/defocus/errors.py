"""The errors defocus raises on purpose, in two kinds that callers handle differently.

* :class:`InputError` — bad input from the user: a missing or corrupt file, an impossible camera, inconsistent
  sizes or counts, a value out of range. Its message fits on one line and speaks of the input itself ("no focus
  distances for stack X"), never of a command-line flag: the library does not know how it was called. Where the
  input has a name (``field``, e.g. ``"focus"`` or ``"camera.f_number"``) the command line adds which flag sets it.
* :class:`ShapeError` — a tensor of the wrong shape or type reached a function: a caller's bug (from the command
  line, a bug of defocus itself, which it reports as such).

Both derive from :class:`DefocusError` (a ``ValueError``), so ``except defocus.DefocusError`` catches everything
defocus raises on purpose.
"""

from __future__ import annotations


class DefocusError(ValueError):
    """Base of the errors defocus raises on purpose (see the module docstring)."""


class InputError(DefocusError):
    """Bad user input; ``field`` optionally names the input (``"focus"``, ``"camera.f_number"``, ...), or the inputs
    any one of which would mend it (a tuple)."""

    def __init__(self, message: str, field: str | tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.field = field


class ShapeError(DefocusError):
    """A tensor of the wrong shape or type was passed to a function (a programming error, not bad input)."""
