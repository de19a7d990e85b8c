"""The schema migration runner: applies `migrations/NNNN_<name>.sql` in order and records them.

Why a runner and not "CREATE IF NOT EXISTS on start": later migrations (views, rollups, prices) depend on
earlier ones, a ClickHouse server may be shared with a contrib collector, and `llmtap db` must be able to say
what is applied. Rules for migration files:

* named ``NNNN_<name>.sql`` (four digits, applied in numeric order, never renumbered once released);
* statements are separated by ``;`` at the end of a line; ``--`` comment lines are ignored;
* table names are unqualified: every statement runs in the target database (``otel`` by default);
* every statement is idempotent (``IF NOT EXISTS``), so a migration interrupted half-way simply runs again.

Applied migrations are recorded in ``llmtap_migrations`` (version, name, checksum, time). The same files run
unchanged on chDB and on a ClickHouse server.

After the files, each table of a retention horizon (retention.py) that has no TTL gets the store's: a TTL written
in a file would be one number for every store, overriding the retention an owner chose with `llmtap db retention`
(deleting raw spans they meant to keep, or keeping them longer than they allowed).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from llmtap.clickhouse.resort import declared_order, resort, table_exists
from llmtap.clickhouse.retention import TableRetention, limit_tables_kept_forever

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
MIGRATIONS_TABLE = "llmtap_migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
# Migrations edited to give a table a new ORDER BY after stores had applied them: version -> the table and the
# checksums those stores recorded. For them migrate() re-sorts the table (resort.py) and records the new text;
# any other change to an applied migration is only reported.
RESORTED = {
    3: ("llm_calls", frozenset({"00e1e523b96a541b25ede694ef902cc03d3413a959265e103b1f7a7ed60d4430"})),
}

_CREATE_MIGRATIONS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    Version UInt32,
    Name String,
    Checksum String,
    AppliedAt DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(AppliedAt)
ORDER BY Version
"""


class MigrationError(RuntimeError):
    """A migration file is malformed or one of its statements failed."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        return split_statements(self.sql)


@dataclass
class MigrationReport:
    """What a run did: which versions it applied, which were already there, which changed since applied, and
    which tables kept forever until then got a TTL."""

    database: str
    applied: list[Migration] = field(default_factory=list)
    already_applied: list[Migration] = field(default_factory=list)
    changed_since_applied: list[Migration] = field(default_factory=list)
    resorted: list[str] = field(default_factory=list)
    limited: list[TableRetention] = field(default_factory=list)

    def summary(self) -> str:
        after = "".join(f"; re-sorted {table} into its new order" for table in self.resorted)
        if self.limited:
            kept = ", ".join(f"{t.table} {t.days} days" for t in self.limited)
            after += f"; retention set where there was none: {kept}"
        if not self.applied:
            return f"schema up to date in {self.database} ({len(self.already_applied)} migrations){after}"
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in self.applied)
        return f"applied {len(self.applied)} migration(s) in {self.database}: {names}{after}"


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files in version order; a misnamed .sql file or a duplicate version is an error."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_<name>.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"{path.name}: version {version:04d} is used twice")
        migrations[version] = Migration(version, match.group(2), path)
    return [migrations[v] for v in sorted(migrations)]


def split_statements(sql: str) -> list[str]:
    """Split on `;` at line end, dropping comment-only lines and empty statements."""
    code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [stmt.strip() for stmt in _STATEMENT_END.split(code) if stmt.strip()]


def applied_versions(client: Client) -> dict[int, str]:
    """Version -> checksum of what the database has recorded as applied (empty when never migrated)."""
    if not table_exists(client, MIGRATIONS_TABLE):
        return {}
    rows = client.query(
        f"SELECT Version, argMax(Checksum, AppliedAt) FROM {MIGRATIONS_TABLE} GROUP BY Version"
    )
    return {int(version): checksum for version, checksum in rows.result_rows}


def migrate(
    client: Client, *, directory: Path = MIGRATIONS_DIR, target: int | None = None
) -> MigrationReport:
    """Apply every migration not yet recorded (up to ``target``), in order, in the client's current database.

    Idempotent: a second run applies nothing. The caller creates the database first
    (``connect(dsn, create_database=True)``). Ends by giving the tables without a TTL their retention.
    """
    database = client.database or "default"
    report = MigrationReport(database=database)
    client.command(_CREATE_MIGRATIONS_TABLE)
    done = applied_versions(client)
    for migration in discover(directory):
        if target is not None and migration.version > target:
            break
        if migration.version in done:
            report.already_applied.append(migration)
            if done[migration.version] != migration.checksum:
                if _was_resortable(client, migration, done[migration.version], report):
                    _record(client, migration)
                else:
                    report.changed_since_applied.append(migration)
            continue
        for number, statement in enumerate(migration.statements(), 1):
            try:
                client.command(statement)
            except Exception as exc:
                raise MigrationError(
                    f"migration {migration.path.name}, statement {number} failed in {database}: {exc}"
                ) from exc
        _record(client, migration)
        report.applied.append(migration)
    report.limited = limit_tables_kept_forever(client)
    return report


def _record(client: Client, migration: Migration) -> None:
    client.insert(
        MIGRATIONS_TABLE,
        [[migration.version, migration.name, migration.checksum, datetime.now(timezone.utc)]],
        column_names=["Version", "Name", "Checksum", "AppliedAt"],
    )


def _was_resortable(client: Client, migration: Migration, recorded: str, report: MigrationReport) -> bool:
    """When the store applied an earlier text of `migration` that only sorted a table otherwise, re-sort the
    table (if not yet done) and say True; False for any other change."""
    table, earlier = RESORTED.get(migration.version, ("", frozenset()))
    if recorded not in earlier:
        return False
    try:
        if resort(client, table, declared_order(migration.statements(), table)):
            report.resorted.append(table)
    except Exception as exc:
        raise MigrationError(
            f"migration {migration.path.name}: re-sorting {table} failed: {exc} "
            "(running `llmtap db migrate` again resumes it)"
        ) from exc
    return True


def status(client: Client, *, directory: Path = MIGRATIONS_DIR) -> list[tuple[Migration, bool]]:
    """Every known migration with whether the database has it applied (for `llmtap db status`)."""
    done = applied_versions(client)
    return [(migration, migration.version in done) for migration in discover(directory)]
