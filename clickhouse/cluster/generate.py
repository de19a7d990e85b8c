"""Generate the ClickHouse *cluster* variant of llmtap's migrations (clickhouse/cluster/migrations/).

The single-node migrations (clickhouse/migrations/) stay the one source of truth; this script derives from each
of them the statements a sharded, replicated cluster needs, so the two can never drift apart:

* a table ``X`` becomes ``X_local`` — ``ReplicatedXMergeTree('/clickhouse/tables/{shard}/{database}/X_local',
  '{replica}')``, one shard's part of the data — plus ``X``, a ``Distributed`` table over all shards. Reads and
  inserts keep using the single-node names, so the collector, the query layer and the dashboards need no change.
  Trace-keyed tables shard by ``cityHash64(TraceId)``: a trace, its lookup row and its LLM calls live on one
  shard. The rest shard randomly.
* a ``Null`` table (rows passed on to views, never stored) becomes ``X_local``, still ``Null``, plus the
  Distributed ``X``: an insert into ``X`` reaches one shard's views, as on a single node;
* small reference tables (``model_prices``) are replicated whole to every node (a single-shard path), so the
  views' price joins run locally;
* a materialized view reads the local table its source's inserts land in and writes the local target, so each
  shard derives its own rows (``MODIFY QUERY`` keeps it so); plain views read the Distributed tables;
* ``ALTER TABLE`` of a table replicated whole keeps its name. Of a sharded table, only changes to how a shard
  stores its rows (projections, settings) are derived, on the local table; any other (columns, say) is refused,
  since its local and Distributed tables need statements written for them;
* every statement gets ``ON CLUSTER '{cluster}'``; ``{cluster}``, ``{shard}`` and ``{replica}`` are the server
  macros (see docs/scaling.md).

Run ``python clickhouse/cluster/generate.py`` after adding a migration; ``--check`` exits 1 when the committed files
are stale (the test suite runs it). A statement this script does not know how to distribute is an error, not a
silent copy.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE_DIR = HERE.parent / "migrations"
TARGET_DIR = HERE / "migrations"
CLUSTER = "'{cluster}'"
# Tables whose rows belong to a trace: shard by trace id so one trace stays on one shard.
TRACE_SHARDED = {"otel_traces", "otel_traces_trace_id_ts", "llm_calls"}
# Tables every node keeps whole (tiny lookup tables joined by views).
REPLICATED_WHOLE = {"model_prices", "llm_uncertain_phrases"}

_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)(\s*\()", re.IGNORECASE)
_CREATE_MV = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)\s+TO (\w+)(\s+AS\b)", re.IGNORECASE)
_CREATE_VIEW = re.compile(r"^CREATE VIEW IF NOT EXISTS (\w+)(\s+AS\b)", re.IGNORECASE)
_ALTER_TABLE = re.compile(r"^ALTER TABLE (\w+)\s+", re.IGNORECASE)
# ALTER actions that concern only a shard's storage, so they apply to the local table alone.
_STORAGE_ALTER = re.compile(r"^(ADD|MATERIALIZE|DROP) PROJECTION\b|^MODIFY SETTING\b", re.IGNORECASE)
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*MergeTree)(?:[ \t]*\(([^)]*)\))?", re.IGNORECASE)
_NULL_ENGINE = re.compile(r"ENGINE\s*=\s*Null\s*$", re.IGNORECASE)
_MODIFY_QUERY = re.compile(r"^MODIFY QUERY\b", re.IGNORECASE)
_DETACH_ATTACH = re.compile(r"^((?:DETACH TABLE IF EXISTS|ATTACH TABLE) \w+)$", re.IGNORECASE)


class GenerateError(RuntimeError):
    """A migration statement the cluster variant cannot be derived for."""


def split(sql: str) -> list[tuple[list[str], str]]:
    """(leading comment lines, statement) pairs, split on `;` at line end like the migration runner; comments
    inside a statement stay in it."""
    pieces = []
    for chunk in _STATEMENT_END.split(sql):
        lines = chunk.strip("\n").splitlines()
        first_code = next(
            (i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("--")), None
        )
        if first_code is not None:
            pieces.append((lines[:first_code], "\n".join(lines[first_code:]).strip()))
    return pieces


def local_name(table: str) -> str:
    return f"{table}_local"


def sharding_key(table: str) -> str:
    return "cityHash64(TraceId)" if table in TRACE_SHARDED else "rand()"


def replicated_engine(table: str, statement: str) -> str:
    match = _ENGINE.search(statement)
    if not match:
        raise GenerateError(f"{table}: no *MergeTree engine to replicate")
    family, params = match.group(1), (match.group(2) or "").strip()
    if family.lower().startswith("replicated"):
        raise GenerateError(f"{table}: already replicated")
    name = table if table in REPLICATED_WHOLE else local_name(table)
    shard = "all" if table in REPLICATED_WHOLE else "{shard}"
    args = [f"'/clickhouse/tables/{shard}/{{database}}/{name}'", "'{replica}'"] + ([params] if params else [])
    return (
        statement[: match.start()]
        + f"ENGINE = Replicated{family}({', '.join(args)})"
        + statement[match.end() :]
    )


@dataclass
class Schema:
    """What the migrations so far created: the tables split in shards and the materialized views."""

    sharded: set[str] = field(default_factory=set)
    views: set[str] = field(default_factory=set)

    def local_query(self, sql: str) -> str:
        """`sql` reading the sharded tables' local parts (so a view derives each shard's rows on that shard)."""
        for table in sorted(self.sharded, key=len, reverse=True):
            sql = re.sub(rf"\b{table}\b", local_name(table), sql)
        return sql


def convert(statement: str, schema: Schema) -> list[str]:
    """The cluster statements for one single-node statement; ``schema`` collects what they create."""
    if match := _CREATE_TABLE.match(statement):
        table = match.group(1)
        if table in REPLICATED_WHOLE:
            head = f"CREATE TABLE IF NOT EXISTS {table} ON CLUSTER {CLUSTER}{match.group(2)}"
            return [replicated_engine(table, head + statement[match.end() :])]
        schema.sharded.add(table)
        local = f"CREATE TABLE IF NOT EXISTS {local_name(table)} ON CLUSTER {CLUSTER}{match.group(2)}"
        local += statement[match.end() :]
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {table} ON CLUSTER {CLUSTER} AS {local_name(table)}\n"
            f"ENGINE = Distributed({CLUSTER}, currentDatabase(), {local_name(table)}, {sharding_key(table)})"
        )
        return [local if _NULL_ENGINE.search(local) else replicated_engine(table, local), distributed]
    if match := _CREATE_MV.match(statement):
        view, target = match.group(1), match.group(2)
        if target not in schema.sharded:
            raise GenerateError(f"{view}: target {target} is not a sharded table")
        schema.views.add(view)
        head = f"CREATE MATERIALIZED VIEW IF NOT EXISTS {view} ON CLUSTER {CLUSTER} TO {local_name(target)}"
        return [head + match.group(3) + schema.local_query(statement[match.end() :])]
    if match := _CREATE_VIEW.match(statement):
        return [f"CREATE VIEW IF NOT EXISTS {match.group(1)} ON CLUSTER {CLUSTER}{statement[match.end(1) :]}"]
    if match := _ALTER_TABLE.match(statement):
        table, action = match.group(1), statement[match.end() :]
        if table in REPLICATED_WHOLE:  # one table on every node
            return [f"ALTER TABLE {table} ON CLUSTER {CLUSTER} {action}"]
        if table in schema.views and _MODIFY_QUERY.match(action):
            return [f"ALTER TABLE {table} ON CLUSTER {CLUSTER} {schema.local_query(action)}"]
        if table in schema.sharded and all(_STORAGE_ALTER.match(part.strip()) for part in _actions(action)):
            return [f"ALTER TABLE {local_name(table)} ON CLUSTER {CLUSTER} {action}"]
    if match := _DETACH_ATTACH.match(statement):  # a view reloaded: on every node
        return [f"{match.group(1)} ON CLUSTER {CLUSTER}"]
    if statement.lstrip().upper().startswith("INSERT INTO "):
        # Backfills run once, from one node: the original names are Distributed tables on the cluster, so the
        # SELECT reads every shard and the INSERT spreads the rows by the sharding key.
        return [statement]
    raise GenerateError(f"cannot derive a cluster statement for: {statement.splitlines()[0]}")


def _actions(action: str) -> list[str]:
    """The comma-separated actions of one ALTER (commas inside parentheses or quotes belong to an action, and so
    do those between the settings of one MODIFY SETTING)."""
    parts, depth, quote, start, escaped = [], 0, "", 0, False
    for i, char in enumerate(action):
        if escaped:
            escaped = False
        elif quote:
            escaped = char == "\\"
            quote = "" if char == quote else quote
        elif char in "'`\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(action[start:i])
            start = i + 1
    actions: list[str] = []
    for part in [*parts, action[start:]]:
        if actions and re.match(r"\s*\w+\s*=", part):  # the next setting of a MODIFY SETTING
            actions[-1] += "," + part
        else:
            actions.append(part)
    return actions


def generate(source_dir: Path = SOURCE_DIR) -> dict[str, str]:
    """File name -> content of the cluster migrations, in the order of the single-node ones."""
    files: dict[str, str] = {}
    schema = Schema()
    for path in sorted(source_dir.glob("*.sql")):
        out = [
            f"-- GENERATED by clickhouse/cluster/generate.py from clickhouse/migrations/{path.name}; do not edit.",
            "-- Apply on any node of the cluster (ON CLUSTER runs it everywhere); see docs/scaling.md.",
            "",
        ]
        for comments, statement in split(path.read_text(encoding="utf-8")):
            try:
                converted = convert(statement, schema)
            except GenerateError as exc:
                raise GenerateError(f"{path.name}: {exc}") from None
            out.extend(comments)
            for cluster_statement in converted:
                out.extend([cluster_statement + ";", ""])
        files[path.name] = "\n".join(out).rstrip("\n") + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed files are not up to date"
    )
    args = parser.parse_args(argv)
    wanted = generate()
    present = {path.name: path.read_text(encoding="utf-8") for path in TARGET_DIR.glob("*.sql")}
    if args.check:
        stale = sorted(
            name for name in wanted.keys() | present.keys() if wanted.get(name) != present.get(name)
        )
        if stale:
            print(f"stale cluster migrations: {', '.join(stale)}; run python clickhouse/cluster/generate.py")
            return 1
        return 0
    TARGET_DIR.mkdir(exist_ok=True)
    for name in present.keys() - wanted.keys():
        (TARGET_DIR / name).unlink()
    for name, text in wanted.items():
        (TARGET_DIR / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(wanted)} cluster migrations to {TARGET_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
