"""Which calls a query is about: :class:`CallFilter`, and its translation into a bound SQL ``WHERE`` clause.

Every value a user types ends up as a server-side bound parameter (``{name:Type}``), never in the SQL text, so
a model called ``x' OR 1=1`` is just a model nobody has. The SQL text only ever contains column names and
parameter placeholders chosen here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

STATUSES = ("ok", "error")
# The filters that take several values each (a call matches any of them); ``tags`` is the ``--tag`` option.
LIST_FIELDS = (
    "project",
    "service",
    "model",
    "provider",
    "operation",
    "error_type",
    "user",
    "session",
    "tags",
)


class FilterError(ValueError):
    """A filter value that cannot mean anything (unknown status, empty tag, since after until…)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


@dataclass(frozen=True)
class CallFilter:
    """A selection of calls. Empty fields select everything; tuples are alternatives (``model=("a", "b")``),
    except ``tags``, which must all be present. ``attributes``/``metadata`` match exact values; a value of
    ``None`` only requires the key."""

    since: datetime | None = None
    until: datetime | None = None
    project: tuple[str, ...] = ()
    service: tuple[str, ...] = ()
    model: tuple[str, ...] = ()
    provider: tuple[str, ...] = ()
    operation: tuple[str, ...] = ()
    status: str | None = None
    error_type: tuple[str, ...] = ()
    user: tuple[str, ...] = ()
    session: tuple[str, ...] = ()
    trace_id: str | None = None
    tags: tuple[str, ...] = ()
    attributes: Mapping[str, str | None] = field(default_factory=dict)
    metadata: Mapping[str, str | None] = field(default_factory=dict)
    text: str | None = None
    min_duration_ms: float | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and utc(self.since) >= utc(self.until):
            raise FilterError(
                "--since", f"{self.since.isoformat()} is not before --until {self.until.isoformat()}"
            )
        if self.status is not None and self.status not in STATUSES:
            raise FilterError("--status", f"{self.status!r} is not one of {', '.join(STATUSES)}")
        for name in LIST_FIELDS:
            if any(not value for value in getattr(self, name)):
                raise FilterError(f"--{name.replace('_', '-')}", "empty value")
        for name, mapping in (("attr", self.attributes), ("meta", self.metadata)):
            if any(not key for key in mapping):
                raise FilterError(f"--{name}", "empty key")
        if self.text is not None and not self.text.strip():
            raise FilterError("--search", "empty search text")
        if self.min_duration_ms is not None and self.min_duration_ms < 0:
            raise FilterError("--slower-than", "must not be negative")

    @property
    def rollup_compatible(self) -> bool:
        """True when only dimensions of the per-minute rollup are constrained (see ``llm_calls_1m``)."""
        return not (
            self.user or self.session or self.trace_id or self.tags or self.attributes or self.metadata
            or self.text or self.min_duration_ms is not None
        )  # fmt: skip


# filter field -> column, for the "any of these values" filters.
_IN_COLUMNS = {
    "project": "Project",
    "service": "ServiceName",
    "model": "Model",
    "provider": "Provider",
    "operation": "Operation",
    "error_type": "ErrorType",
    "user": "UserId",
    "session": "SessionId",
}
_ROLLUP_FIELDS = ("project", "service", "model", "provider", "operation", "error_type")


# rollup time column -> the function that rounds a time down to its bucket
_ROLLUP_BUCKETS = {"Minute": "toStartOfMinute", "Hour": "toStartOfHour", "Day": "toStartOfDay"}


def where_clause(flt: CallFilter, *, rollup: str | None = None) -> tuple[str, dict[str, Any]]:
    """``(sql, parameters)`` for a ``WHERE`` over llm_calls, or over a rollup when ``rollup`` names its time
    column ("Minute" for llm_calls_1m, "Hour" for llm_calls_1h, "Day" for the daily ones).

    Time bounds are bound as nanoseconds since the epoch so the server's timezone never shifts them; on a rollup
    the bucket that contains ``since`` is included.
    """
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if rollup and not flt.rollup_compatible:
        raise ValueError("this filter needs llm_calls: it constrains columns the rollup does not keep")
    time_column = rollup or "Timestamp"
    if flt.since:
        params["since_ns"] = _epoch_ns(flt.since)
        since = "fromUnixTimestamp64Nano({since_ns:Int64})"
        if rollup:
            since = f"{_ROLLUP_BUCKETS[rollup]}({since})"
        conditions.append(f"{time_column} >= {since}")
    if flt.until:
        params["until_ns"] = _epoch_ns(flt.until)
        conditions.append(f"{time_column} < fromUnixTimestamp64Nano({{until_ns:Int64}})")
    for name, column in _IN_COLUMNS.items():
        values = getattr(flt, name)
        if values and (not rollup or name in _ROLLUP_FIELDS):
            params[name] = list(values)
            conditions.append(f"{column} IN {{{name}:Array(String)}}")
    if flt.status:
        conditions.append("IsError = 1" if flt.status == "error" else "IsError = 0")
    if flt.trace_id:
        params["trace_id"] = flt.trace_id.lower()
        conditions.append("TraceId = {trace_id:String}")
    if flt.tags:
        params["tags"] = list(flt.tags)
        conditions.append("hasAll(Tags, {tags:Array(String)})")
    for prefix, column, mapping in (
        ("attr", "Attributes", flt.attributes),
        ("meta", "Metadata", flt.metadata),
    ):
        for index, (key, value) in enumerate(sorted(mapping.items(), key=lambda kv: kv[0])):
            params[f"{prefix}_key_{index}"] = key
            if value is None:
                conditions.append(f"mapContains({column}, {{{prefix}_key_{index}:String}})")
            else:
                params[f"{prefix}_value_{index}"] = value
                conditions.append(
                    f"{column}[{{{prefix}_key_{index}:String}}] = {{{prefix}_value_{index}:String}}"
                )
    if flt.text:
        params["text"] = flt.text
        conditions.append(
            "(positionCaseInsensitiveUTF8(InputMessages, {text:String}) > 0"
            " OR positionCaseInsensitiveUTF8(OutputMessages, {text:String}) > 0"
            " OR positionCaseInsensitiveUTF8(SystemInstructions, {text:String}) > 0)"
        )
    if flt.min_duration_ms is not None:
        params["min_duration_ns"] = round(flt.min_duration_ms * 1e6)
        conditions.append("Duration >= {min_duration_ns:UInt64}")
    return ("WHERE " + " AND ".join(conditions) if conditions else ""), params


def utc(moment: datetime) -> datetime:
    """A naive time taken as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _epoch_ns(moment: datetime) -> int:
    """Exact nanoseconds since the epoch (float seconds would lose the last digits)."""
    delta = utc(moment) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
