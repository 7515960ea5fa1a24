"""Progress bars that show on a terminal and stay out of logs.

tqdm redraws its bars with carriage returns and, for nested bars, cursor-movement escape codes: fine on a terminal,
garbage in a log file or a CI job's output. :func:`progress_bar` is tqdm with one rule added: where standard error
is not a terminal the bar is off (the commands print one line per result anyway, and training one per epoch). Set
``DEFOCUS_PROGRESS=1`` to force bars on (``0`` to force them off) whatever standard error is.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable

from tqdm import tqdm


def bars_wanted() -> bool:
    """Whether progress bars are drawn: ``DEFOCUS_PROGRESS`` if set (1/0), else whether stderr is a terminal."""
    forced = os.environ.get("DEFOCUS_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, disabled unless ``enabled`` and :func:`bars_wanted`."""
    return tqdm(iterable, disable=not (enabled and bars_wanted()), **kwargs)


def progress_write(text: str, file: Any = None) -> None:
    """Prints a line without breaking a bar that is being drawn (``tqdm.write``)."""
    tqdm.write(text, file=file)
