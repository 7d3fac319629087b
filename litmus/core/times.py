"""The one rendering of a time in every answer and log line: ISO 8601 in UTC with a `Z`."""

from __future__ import annotations

from datetime import datetime
from typing import overload


@overload
def iso(dt: datetime) -> str: ...
@overload
def iso(dt: None) -> None: ...
def iso(dt: datetime | None) -> str | None:
    """`2026-01-02T03:04:05.123456Z` for an aware UTC time; None stays None."""
    return None if dt is None else dt.isoformat().replace("+00:00", "Z")
