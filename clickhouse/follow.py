"""``llmtap logs --follow``: yield calls as they land in the store.

A span is stored when the call ends and its batch is exported, seconds after its start time (the row's
Timestamp), and a long streaming call lands after shorter ones that started later. So each poll re-reads a
look-back window of start times and yields only span ids it has not yielded yet, instead of asking for rows
"after the last one seen", which would skip such late arrivals.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from llmtap.clickhouse.filters import CallFilter
from llmtap.clickhouse.queries import CallSummary, search_calls

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

LOOKBACK = timedelta(minutes=10)
POLL_LIMIT = 10_000


def follow_calls(
    client: Client,
    flt: CallFilter,
    *,
    already_seen: Iterable[CallSummary] = (),
    interval: float = 1.0,
    lookback: timedelta = LOOKBACK,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> Iterator[list[CallSummary]]:
    """Endless: each item is the (possibly empty) list of calls new since the previous poll, oldest first."""
    if flt.until is not None:
        raise ValueError("following new calls has no end: drop --until")
    seen = {call.span_id: call.timestamp for call in already_seen}
    first = True
    while True:
        if not first:
            sleep(interval)
        first = False
        window_start = clock() - lookback
        since = max(flt.since, window_start) if flt.since else window_start
        calls = search_calls(
            client, dataclasses.replace(flt, since=since), limit=POLL_LIMIT, oldest_first=True
        )
        fresh = [call for call in calls if call.span_id not in seen]
        seen.update((call.span_id, call.timestamp) for call in fresh)
        for span_id in [span_id for span_id, stamp in seen.items() if stamp < window_start]:
            del seen[span_id]
        yield fresh
