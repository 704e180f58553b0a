"""The inputs folder's layout: one ``date=YYYY-MM-DD/`` folder per business date.

A directory listing only (no Polars, no Prefect), so the command line can check dates
before anything heavy is imported.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def input_dates(inputs: Path, start: dt.date | None = None, end: dt.date | None = None) -> list[dt.date]:
    """Dates that have a ``date=D/`` folder under ``inputs``, within [start, end] when given."""
    found = []
    for folder in Path(inputs).glob("date=*"):
        try:
            day = dt.date.fromisoformat(folder.name.removeprefix("date="))
        except ValueError:
            continue
        if folder.is_dir() and (start is None or day >= start) and (end is None or day <= end):
            found.append(day)
    return sorted(found)
