"""Bring a store up to date: pending migrations, then the bundled model prices.

One function for everything that opens a store for writing (``llmtap db migrate`` and ``llmtap serve``), so a
store created by either prices calls the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmtap.clickhouse.migrations import MigrationReport, migrate
from llmtap.clickhouse.prices import load_bundled_prices

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


def bring_up_to_date(client: Client) -> tuple[MigrationReport, int]:
    """Apply pending migrations and reload llmtap's prices (a user's own prices are kept); returns both results."""
    report = migrate(client)
    return report, load_bundled_prices(client)
