"""What every benchmark in bench/ shares: per-call timing, quantiles, interleaving, RSS, machine info, tables.

Benchmarks import it as a sibling module (``from _common import ...``; a script's own folder is on
``sys.path``). It uses the standard library only, because it also runs inside the peers' virtual environments.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence


def time_calls(call: Callable[[], object], count: int) -> dict[str, list[int]]:
    """Nanoseconds of each of ``count`` calls, as CPU time of this process and as wall time.

    Per-call samples keep the tail (GC pauses, slow paths) visible. CPU time is the figure to compare on a
    shared machine: another process taking the core inflates wall time, not this process's CPU time.
    """
    cpu_clock, wall_clock = time.process_time_ns, time.perf_counter_ns
    cpu, wall = [], []
    for _ in range(count):
        cpu_start, wall_start = cpu_clock(), wall_clock()
        call()
        wall.append(wall_clock() - wall_start)
        cpu.append(cpu_clock() - cpu_start)
    return {"cpu": cpu, "wall": wall}


def quantile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) with linear interpolation, like numpy's default."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def rotations(items: Sequence[str], rounds: int) -> Iterator[list[str]]:
    """One order per round, each rotated by one, so no variant always runs first (warm caches) or last."""
    for round_index in range(rounds):
        shift = round_index % len(items) if items else 0
        yield list(items[shift:]) + list(items[:shift])


def rss_bytes() -> int:
    """Resident set size now (Linux /proc); elsewhere the peak RSS, the closest portable figure."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: how busy the machine was while a figure was measured."""
    try:
        return "/".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total() -> str:
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])  # first line: MemTotal
        return f"{kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        return "?"


def machine_info() -> dict[str, str]:
    """The facts a reader needs to judge a figure: what it ran on, and when."""
    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": memory_total(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "load average (1/5/15 min)": load_average(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured table; numbers are right-aligned so columns of figures read at a glance."""
    numeric = [
        all(isinstance(row[i], (int, float)) or row[i] in ("", "—") for row in rows)
        for i in range(len(headers))
    ]
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---:" if is_number else "---" for is_number in numeric) + " |",
    ]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def format_number(value: float) -> str:
    """Three significant-ish figures: 1.4, 58.1, 1,275."""
    return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return format_number(value)
    return str(value).replace("|", "\\|")
