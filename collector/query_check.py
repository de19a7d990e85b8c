"""Which SQL the query API runs: one SELECT over the store's own tables, judged on ClickHouse's own parse tree.

The query API's sessions are ``readonly=1``, which already refuses writes, ``SETTINGS`` and table functions.
What that leaves open is checked here, on the tree ClickHouse builds (``EXPLAIN AST``), never by matching text:

- ``formatQuerySingleLine`` parses the text and refuses more than one statement; its output, a single statement
  with balanced brackets and no comments, is what is checked and then run;
- wrapped as ``SELECT * FROM (<statement>)`` it only parses when it is a SELECT without output options, so
  ``INTO OUTFILE`` (which chDB, being its own client, would write) and ``FORMAT`` cannot pass;
- in its tree, ``SETTINGS`` anywhere, a table function, a function that reads files, and a table outside the
  store's database (but for the catalog tables ``llmtap db status`` reads) are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# The system tables the CLI reads through serve (`llmtap db status`, retention); the rest (query logs, processes,
# settings, users) tell about or act on more than the store.
SYSTEM_TABLES = frozenset({"parts", "tables", "columns", "databases"})
# Databases a qualified name may point into besides the store's own.
_OTHER_DATABASES = frozenset({"system", "default", "information_schema"})
# Scalar functions that reach outside the store: file() reads any file in chDB (no user_files_path there).
_FUNCTIONS_REFUSED = frozenset({"file", "catboostevaluate"})
_SELECTS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery")
_SYNTAX_ERROR = "Code: 62."
_ONE_SELECT = 'the query API runs one SELECT, without FORMAT (the request\'s "format" chooses it), INTO OUTFILE or SETTINGS'


class QueryError(ValueError):
    """A query request that cannot be run; the message is returned to the caller (400)."""


def checked_statement(client: Any, sql: str, parameters: dict[str, Any], database: str) -> str:
    """The statement to run for ``sql``, or QueryError saying what the API does not run."""
    try:
        statement = client.query(
            "SELECT formatQuerySingleLine({q:String})", parameters={"q": sql}
        ).result_rows[0][0]
    except Exception as exc:
        raise QueryError(f"the query does not parse as one statement: {first_line(exc)}") from None
    try:
        tree = client.raw_query(
            f"EXPLAIN AST SELECT * FROM ({statement})", parameters=parameters, fmt="TabSeparatedRaw"
        )
    except Exception as exc:
        # The statement parsed alone (above): a syntax error here comes from its kind or its output options.
        raise QueryError(_ONE_SELECT if _SYNTAX_ERROR in str(exc) else first_line(exc)) from None
    databases = {name for (name,) in client.query("SELECT name FROM system.databases").result_rows}
    problem = tree_problem(bytes(tree).decode(), database, databases)
    if problem:
        raise QueryError(problem)
    return str(statement)


def tree_problem(tree: str, database: str, databases: set[str]) -> str | None:
    """What the API refuses in an ``EXPLAIN AST SELECT * FROM (<statement>)`` tree, or None; ``databases`` are
    the names a qualified name may start with to point into another database."""
    nodes = list(_nodes(tree))
    inner = next((i for i, (kind, _) in enumerate(nodes) if kind == "Subquery"), None)
    if inner is None or inner + 1 >= len(nodes) or nodes[inner + 1][0] not in _SELECTS:
        return _ONE_SELECT
    for index, (kind, detail) in enumerate(nodes):
        if kind == "Set":
            return "SETTINGS are fixed by llmtap serve's query API; remove the SETTINGS clause"
        if kind == "TableExpression" and index + 1 < len(nodes) and nodes[index + 1][0] == "Function":
            name = nodes[index + 1][1].split(" ")[0]
            return f"table functions such as {name}() are not allowed; query the store's tables"
        if kind == "Function" and detail.split(" ")[0].lower() in _FUNCTIONS_REFUSED:
            return f"the function {detail.split(' ')[0]}() is not allowed through the query API"
        if kind in ("TableIdentifier", "Identifier"):
            problem = _name_problem(
                detail.split(" ")[0], database, databases, table=kind == "TableIdentifier"
            )
            if problem:
                return problem
    return None


def _name_problem(name: str, database: str, databases: set[str], table: bool) -> str | None:
    """A table outside the store: ``db.table`` (in FROM, JOIN or ``x IN db.table``) whose db is not the store's.

    A plain name is the store's table or a CTE. In expressions ``a.b`` is a column of alias ``a`` too, so there
    it is refused only when ``a`` names a database."""
    parts = name.replace("`", "").replace('"', "").split(".")
    if len(parts) < 2:
        return None
    qualifier, rest = parts[0], parts[1]
    if qualifier == database:
        return None
    if qualifier.lower() == "system" and rest in SYSTEM_TABLES:
        return None
    if table or qualifier in databases or qualifier.lower() in _OTHER_DATABASES:
        return f"{name} is outside the store; the query API reads the tables of {database!r} only"
    return None


def _nodes(tree: str) -> Iterator[tuple[str, str]]:
    """(kind, detail) per line of EXPLAIN AST output, e.g. ``   TableIdentifier otel.t (alias x)``; a node's
    children follow it, so a TableExpression's one child is the next line."""
    for line in tree.splitlines():
        if line.strip():
            kind, _, detail = line.strip().partition(" ")
            yield kind, detail


def first_line(exc: BaseException) -> str:
    """An error's first line (ClickHouse errors carry a stack trace below it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)
