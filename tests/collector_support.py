"""Helpers shared by the collector tests: an in-process `llmtap serve` on free ports, raw OTLP posts, waiting."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import logging
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llmtap.collector.app import Collector, ServeConfig
from llmtap.collector.pipeline import Limits

FAST = Limits(flush_seconds=0.05)
log = logging.getLogger(__name__)


@contextlib.contextmanager
def running_collector(directory: Path, **options: Any) -> Iterator[Collector]:
    """A started Collector on chDB under ``directory`` with free HTTP and gRPC ports; stopped on exit."""
    options.setdefault("dsn", f"chdb://{directory / 'chdb'}")
    options.setdefault("limits", FAST)
    options.setdefault("workers", 0)  # serve's default on two cores: one encoder thread
    collector = Collector(ServeConfig(port=0, grpc_port=0, **options))
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()


def post(
    url: str,
    body: bytes,
    content_type: str = "application/x-protobuf",
    headers: dict[str, str] | None = None,
    compress: bool = False,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """POST raw bytes; returns (status, headers, body) for successes and HTTP errors alike. Header names are
    case-insensitive (as in HTTP: serve sends them in lower case)."""
    if compress:
        body = gzip.compress(body)
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", content_type)
    if compress:
        request.add_header("Content-Encoding", "gzip")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def wait_written(collector: Collector, signal: str, count: int, timeout: float = 30.0) -> None:
    """Block until serve has written ``count`` items of ``signal`` to ClickHouse."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        written = collector.stats.snapshot()["signals"][signal]["written"]
        if written >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"only {written} of {count} {signal} written after {timeout}s")


def settle(collector: Collector, timeout: float = 30.0) -> None:
    """Block until everything serve accepted so far has been written (or dropped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        signals = collector.stats.snapshot()["signals"]
        if all(s["written"] + s["dropped"] >= s["received"] for s in signals.values()):
            return
        time.sleep(0.02)
    raise AssertionError(f"serve did not write everything within {timeout}s: {signals}")


def query(collector: Collector, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Read back through a clickhouse-connect client on the same store."""
    from llmtap.clickhouse.connection import connect

    client = connect(collector.config.dsn)
    try:
        return client.query(sql, parameters=parameters or {}).result_rows
    finally:
        client.close()


@contextlib.contextmanager
def mounted_tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``directory``: a disk small enough to fill. Skips where mounting is not permitted."""
    directory.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)]
    result = subprocess.run(mount, capture_output=True, text=True) if shutil.which("mount") else None
    if result is None or result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root): {result.stderr.strip() if result else 'no mount'}"
        )
    try:
        yield directory
    finally:
        unmount = subprocess.run(["umount", "--lazy", str(directory)], capture_output=True, text=True)
        if unmount.returncode != 0:  # raising here would hide the failure that may have brought us here
            log.warning("cannot unmount the tmpfs at %s: %s", directory, unmount.stderr.strip())


def fill_leaving(filler: Path, free_bytes: int) -> None:
    """Fill the file system of ``filler`` with that file until only ``free_bytes`` are left."""
    stats = os.statvfs(filler.parent)
    filler.write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - free_bytes))
