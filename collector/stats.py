"""Self-metrics of `llmtap serve`: what came in, what was written, what was refused, how fast ClickHouse is.

Counted per signal in items (spans, data points, log records): received = accepted into the spool, written =
inserted into ClickHouse, rejected = invalid items refused at the door, refused = whole requests turned away
(overload, store down, auth), dropped = accepted items that could never be written (quarantined).
Exposed as JSON on /health, as Prometheus text on /metrics and as the console status line.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

SIGNALS = ("traces", "metrics", "logs")
COUNTERS = ("received", "written", "rejected", "dropped")


class Stats:
    """Thread-safe counters plus a window of recent write latencies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.counts = {signal: dict.fromkeys(COUNTERS, 0) for signal in SIGNALS}
        self.requests_refused = 0
        self.queued_items = 0
        self.write_batches = 0
        self.write_errors = 0
        self.store_up = True
        self.last_error = ""
        self._latencies: deque[float] = deque(maxlen=512)

    def add(self, signal: str, counter: str, items: int) -> None:
        with self._lock:
            self.counts[signal][counter] += items
            if counter == "received":
                self.queued_items += items
            elif counter in ("written", "dropped"):
                self.queued_items -= items

    def refused(self) -> None:
        with self._lock:
            self.requests_refused += 1

    def write_succeeded(self, seconds: float) -> None:
        with self._lock:
            self.write_batches += 1
            self._latencies.append(seconds)
            self.store_up = True
            self.last_error = ""

    def write_failed(self, error: str, *, store_down: bool) -> None:
        with self._lock:
            self.write_errors += 1
            self.last_error = error
            if store_down:
                self.store_up = False

    def latency_ms(self, quantile: float) -> float:
        with self._lock:
            values = sorted(self._latencies)
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(quantile * len(values)))] * 1000

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            counts = {signal: dict(values) for signal, values in self.counts.items()}
            snapshot = {
                "uptime_seconds": round(time.time() - self.started, 1),
                "store_up": self.store_up,
                "last_error": self.last_error,
                "queued_items": self.queued_items,
                "requests_refused": self.requests_refused,
                "write_batches": self.write_batches,
                "write_errors": self.write_errors,
                "signals": counts,
            }
        snapshot["write_latency_ms"] = {
            "p50": round(self.latency_ms(0.5), 2),
            "p99": round(self.latency_ms(0.99), 2),
        }
        return snapshot

    def prometheus(self, extra: dict[str, float]) -> str:
        """Prometheus text exposition of the counters (scrape /metrics)."""
        snap = self.snapshot()
        lines = []
        for counter in COUNTERS:
            name = f"llmtap_serve_items_{counter}_total"
            lines.append(f"# TYPE {name} counter")
            for signal in SIGNALS:
                lines.append(f'{name}{{signal="{signal}"}} {snap["signals"][signal][counter]}')
        gauges = {
            "llmtap_serve_items_queued": snap["queued_items"],
            "llmtap_serve_store_up": int(snap["store_up"]),
            "llmtap_serve_write_latency_p50_ms": snap["write_latency_ms"]["p50"],
            "llmtap_serve_write_latency_p99_ms": snap["write_latency_ms"]["p99"],
            **extra,
        }
        for name, value in gauges.items():
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        for name, value in (
            ("llmtap_serve_requests_refused_total", snap["requests_refused"]),
            ("llmtap_serve_write_batches_total", snap["write_batches"]),
            ("llmtap_serve_write_errors_total", snap["write_errors"]),
        ):
            lines += [f"# TYPE {name} counter", f"{name} {value}"]
        return "\n".join(lines) + "\n"
