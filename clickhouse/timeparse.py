"""Parse the times and durations people type: ``15m``, ``1h``, ``7d``, ``2w``, ``2026-11-01``, ISO date-times.

Shared by the ``--since``/``--until`` options and ``llmtap db retention``, so both accept the same spellings and
reject the rest with the same message.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
TIME_HELP = "a duration back from now (30m, 1h, 7d, 2w), 'now', or an ISO date/date-time (2026-11-01, 2026-11-01T09:30)"


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``7d``, ``2w`` (also ``250ms``) as a timedelta; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(
            f"invalid duration {text!r}: expected a number and a unit, like 250ms, 90s, 15m, 1h, 7d, 2w"
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time (timezone-aware, UTC when the text names no zone) from a duration ago, 'now' or ISO text."""
    now = now or datetime.now(timezone.utc)
    stripped = text.strip()
    if stripped.lower() == "now":
        return now
    if _DURATION.match(stripped):
        return now - parse_duration(stripped)
    try:
        moment = datetime.fromisoformat(stripped.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid time {text!r}: expected {TIME_HELP}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
