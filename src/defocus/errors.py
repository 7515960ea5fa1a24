"""Exceptions raised on bad user input.

Everything the command line can be given wrongly raises :class:`DefocusError` with a message that fits on one line
and, where useful, names the flag to pass. The CLI prints that line on stderr and exits non-zero; library users can
catch it like any ``ValueError``.
"""


class DefocusError(ValueError):
    """Bad input: a missing or corrupt file, an impossible camera, inconsistent sizes or counts."""
