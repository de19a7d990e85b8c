"""Helpers of the docker-compose tests (tests/test_compose*.py): no Docker engine runs here, so the tests read the
compose file, the collector configs and the ClickHouse init script the way Docker Compose, otelcol-contrib and
the clickhouse-server image would, and check them against each other and against the repository.

* :func:`interpolate` / :func:`compose_model` — Compose's variable interpolation with the values of .env.example,
  so ports, users and defaults are checked as `docker compose config` would render them.
* :func:`check_keys` / :func:`merge_configs` — the collector's key validation (from tests/data/otelcol-components.yaml)
  and its merging of several ``--config`` files.
* :func:`run_init_script` — runs clickhouse/server/initdb/llmtap-init.sh with a stand-in ``clickhouse-client`` that
  records every call; :func:`replay_on_chdb` executes the recorded SQL on chDB (in a child process, since chDB
  allows one data directory per process).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
COMPOSE_FILE = REPO / "docker-compose.yml"
AUTH_COMPOSE_FILE = REPO / "docker-compose.auth.yml"
ENV_EXAMPLE = REPO / ".env.example"
COLLECTOR_CONFIG = REPO / "collector" / "otelcol.yaml"
COLLECTOR_AUTH_CONFIG = REPO / "collector" / "otelcol-auth.yaml"
INIT_SCRIPT = REPO / "clickhouse" / "server" / "initdb" / "llmtap-init.sh"
MIGRATIONS_DIR = REPO / "clickhouse" / "migrations"
PRICES_FILE = REPO / "clickhouse" / "data" / "model_prices.csv"

# Passwords a user would put in .env (.env.example leaves them empty on purpose).
TEST_SECRETS = {
    "CLICKHOUSE_ADMIN_PASSWORD": "admin-secret-1",
    "CLICKHOUSE_WRITER_PASSWORD": "writer-secret-2",
    "CLICKHOUSE_READER_PASSWORD": "reader-secret-3",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret-4",
    "LLMTAP_OTLP_TOKEN": "otlp-token-5",
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- Compose ------------------------------------------------------------------------------------------------------


def env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped), as Compose reads .env."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a KEY=VALUE line: {line!r}"
        values[key.strip()] = value.strip()
    return values


def user_env(**overrides: str) -> dict[str, str]:
    """.env as a user would have it: .env.example with the passwords filled in."""
    return {**env_file(), **TEST_SECRETS, **overrides}


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A required variable (${VAR:?message}) is missing, as `docker compose` would report."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $VAR, $$."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        op, arg = match.group("op"), match.group("arg")
        present = name in env
        current = env.get(name, "")
        if op in (":-", "-"):
            use_default = not current if op == ":-" else not present
            return arg if use_default else current
        if op in (":?", "?"):
            missing = not current if op == ":?" else not present
            if missing:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return current
        return current

    return _VARIABLE.sub(replace, value)


def variables_in(value: Any) -> set[str]:
    """Every variable name a compose document refers to."""
    text = yaml.safe_dump(value) if not isinstance(value, str) else value
    return {
        match.group("braced") or match.group("named")
        for match in _VARIABLE.finditer(text)
        if not match.group("escaped")
    }


def compose_model(env: dict[str, str] | None = None, path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as `docker compose config` renders it with ``env`` (default: a filled-in .env)."""
    return interpolate(load_yaml(path), user_env() if env is None else env)


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of a service's bind mounts (short syntax `./src:/dst[:ro]`)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def named_volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def parse_port(spec: str) -> tuple[str, int, int]:
    """`host_ip:published:target` -> (host_ip, published, target)."""
    host_ip, published, target = spec.rsplit(":", 2)
    return host_ip, int(published), int(target.split("/")[0])


# --- OpenTelemetry Collector configuration ------------------------------------------------------------------------

_LEAF_TYPES = {"string", "integer", "number", "boolean", "duration", "string_list", "map", "any"}
_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^0$")
_PLACEHOLDER = re.compile(r"^\$\{(env|file):[^}]+\}$")


def component_table() -> dict[str, Any]:
    return load_yaml(DATA / "otelcol-components.yaml")


def check_keys(value: Any, schema: Any, where: str) -> list[str]:
    """Problems of ``value`` against a schema node of otelcol-components.yaml (empty list: valid)."""
    if isinstance(value, str) and _PLACEHOLDER.match(value):
        return []
    if isinstance(schema, dict) and "$list" in schema:
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        problems = []
        for index, item in enumerate(value):
            problems += check_keys(item, schema["$list"], f"{where}[{index}]")
        return problems
    if isinstance(schema, dict):
        if value is None:  # an empty section (`health_check:`) takes the defaults
            return []
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {type(value).__name__}"]
        problems = []
        for key, item in value.items():
            if key not in schema:
                problems.append(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(schema))})")
            else:
                problems += check_keys(item, schema[key], f"{where}.{key}")
        return problems
    assert schema in _LEAF_TYPES, f"bad schema leaf {schema!r} at {where}"
    return _check_leaf(value, schema, where)


def _check_leaf(value: Any, kind: str, where: str) -> list[str]:
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "duration": (isinstance(value, str) and bool(_DURATION.match(value))) or value == 0,
        "string_list": isinstance(value, list) and all(isinstance(item, str) for item in value),
        "map": isinstance(value, dict) or value is None,
        "any": True,
    }[kind]
    return [] if ok else [f"{where}: {value!r} is not a {kind}"]


def component_type(component_id: str) -> str:
    """`file_storage/queue` -> `file_storage` (the part before the slash names the component type)."""
    return component_id.split("/", 1)[0]


def check_collector_config(config: dict[str, Any]) -> list[str]:
    """Every key of every component and of `service` is one the component documents; every component that a
    pipeline or `service.extensions` names is defined, and every defined component is used."""
    table = component_table()
    problems: list[str] = []
    for kind in ("receivers", "processors", "exporters", "extensions", "connectors"):
        for component_id, settings in (config.get(kind) or {}).items():
            schema = table["components"].get(kind, {}).get(component_type(component_id))
            if schema is None:
                problems.append(f"{kind}.{component_id}: no such component in otelcol-components.yaml")
                continue
            problems += check_keys(settings, schema, f"{kind}.{component_id}")
    service = config.get("service") or {}
    problems += check_keys(service, table["service"], "service")
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in (service.get("pipelines") or {}).items():
        if component_type(name) not in ("traces", "metrics", "logs", "profiles"):
            problems.append(f"service.pipelines.{name}: not a signal (traces, metrics, logs, profiles)")
        extra = set(pipeline) - {"receivers", "processors", "exporters"}
        if extra:
            problems.append(f"service.pipelines.{name}: unknown keys {sorted(extra)}")
        for kind in used:
            for component_id in pipeline.get(kind, []):
                used[kind].add(component_id)
                if component_id not in (config.get(kind) or {}):
                    problems.append(f"service.pipelines.{name}: {kind[:-1]} {component_id!r} is not defined")
        if not pipeline.get("receivers") or not pipeline.get("exporters"):
            problems.append(f"service.pipelines.{name}: needs receivers and exporters")
    for component_id in service.get("extensions", []):
        if component_id not in (config.get("extensions") or {}):
            problems.append(f"service.extensions: {component_id!r} is not defined")
    for kind, names in used.items():
        for component_id in config.get(kind) or {}:
            if component_id not in names:
                problems.append(f"{kind}.{component_id}: defined but in no pipeline")
    for component_id in config.get("extensions") or {}:
        if component_id not in service.get("extensions", []):
            problems.append(f"extensions.{component_id}: defined but not in service.extensions")
    return problems


def merge_configs(base: Any, overlay: Any) -> Any:
    """The collector's merge of several --config files: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = merge_configs(base[key], value) if key in base else value
        return merged
    return overlay


def env_placeholders(config: Any) -> set[str]:
    """Names of the ${env:NAME} / ${env:NAME:-default} placeholders of a collector config."""
    return set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)", yaml.safe_dump(config)))


# --- ClickHouse schema of the migrations --------------------------------------------------------------------------

_CREATE = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(?P<kind>TABLE|MATERIALIZED\s+VIEW|VIEW|DICTIONARY)\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(?P<name>[A-Za-z_][A-Za-z0-9_.]*)",
    re.IGNORECASE,
)


def migration_objects(directory: Path = MIGRATIONS_DIR) -> dict[str, str]:
    """Name -> kind (TABLE, VIEW, MATERIALIZED VIEW) of every object the migration files create."""
    objects = {}
    for path in sorted(directory.glob("*.sql")):
        for match in _CREATE.finditer(path.read_text(encoding="utf-8")):
            objects[match.group("name").split(".")[-1]] = " ".join(match.group("kind").upper().split())
    return objects


def table_ddl(name: str, directory: Path = MIGRATIONS_DIR) -> str:
    """The CREATE statement of one table of the migrations."""
    for path in sorted(directory.glob("*.sql")):
        for statement in path.read_text(encoding="utf-8").split(";\n"):
            match = _CREATE.search(statement)
            if match and match.group("name").split(".")[-1] == name:
                return statement
    raise KeyError(name)


# --- The ClickHouse init script, run against a stand-in clickhouse-client -----------------------------------------

# The stand-in records each call (arguments and standard input) as a JSON line, and answers the one query whose
# result the script reads: the migration versions already recorded (from FAKE_CH_APPLIED). A call whose SQL contains
# FAKE_CH_FAIL_ON fails like a ClickHouse error.
FAKE_CLIENT = textwrap.dedent(
    """\
    #!{python} -IS
    import json, os, sys
    args = sys.argv[1:]
    call = {{"args": args, "stdin": sys.stdin.read(), "params": {{}}, "multiquery": False}}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--multiquery":
            call["multiquery"] = True
        elif arg.startswith("--param_"):
            name, _, value = arg[len("--param_"):].partition("=")
            call["params"][name] = value
        elif arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            if not sep:
                i += 1
                value = args[i]
            call[name] = value
        else:
            sys.exit("unexpected argument " + arg)
        i += 1
    with open(os.environ["FAKE_CH_LOG"], "a") as log:
        log.write(json.dumps(call) + "\\n")
    fail_on = os.environ.get("FAKE_CH_FAIL_ON")
    if fail_on and fail_on in call.get("query", "") + call["stdin"]:
        sys.exit("Code: 62. DB::Exception: Syntax error (stand-in failure)")
    query = call.get("query", "")
    if query.startswith("SELECT DISTINCT Version FROM"):
        path = os.environ.get("FAKE_CH_APPLIED", "")
        if path and os.path.exists(path):
            sys.stdout.write(open(path).read())
    """
)


def run_init_script(
    tmp_path: Path, env: dict[str, str] | None = None, applied: list[int] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Run llmtap-init.sh as the image would (bash, the compose environment) with the stand-in client.

    Returns the process and the recorded client calls.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "clickhouse-client"
    fake.write_text(FAKE_CLIENT.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.write_text("")
    applied_file = tmp_path / "applied.txt"
    applied_file.write_text("".join(f"{version}\n" for version in applied or []))
    compose_env = compose_model()["services"]["clickhouse"]["environment"]
    script_env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
        "FAKE_CH_LOG": str(log),
        "FAKE_CH_APPLIED": str(applied_file),
        **compose_env,
        "LLMTAP_MIGRATIONS_DIR": str(MIGRATIONS_DIR),
        "LLMTAP_PRICES_FILE": str(PRICES_FILE),
        **(env or {}),
    }
    process = subprocess.run(
        ["bash", str(INIT_SCRIPT)],
        env=script_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return process, calls


def replay_on_chdb(calls: list[dict[str, Any]], chdb_dir: Path, reference_database: str) -> dict[str, Any]:
    """Execute the recorded calls on chDB, build ``reference_database`` with `llmtap db migrate`'s own code, and
    return both schemas, both price tables, what the runner says about the replayed database, and how ClickHouse
    formats each access-control statement (chDB has no user management, so those are parsed, not run)."""
    request = {"calls": calls, "chdb": str(chdb_dir), "reference": reference_database}
    process = subprocess.run(
        [sys.executable, "-c", "import compose_support, sys; compose_support._replay_main()"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=str(Path(__file__).parent),
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert process.returncode == 0, process.stderr[-4000:]
    return json.loads(process.stdout)


_ACCESS_CONTROL = re.compile(
    r"^\s*(CREATE\s+USER|ALTER\s+USER|CREATE\s+SETTINGS\s+PROFILE|GRANT|REVOKE)\b", re.I
)
_INPUT = re.compile(r"FROM\s+input\((?P<structure>'[^']*')\)\s*FORMAT\s+(?P<format>\w+)\s*$", re.S)


def _escape_parameter(text: str) -> str:
    """A query parameter value in ClickHouse's escaped format (how clickhouse-client would stream stdin)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def _replay_main() -> None:
    from llmtap.clickhouse.connection import connect
    from llmtap.clickhouse.migrations import migrate, split_statements
    from llmtap.clickhouse.prices import load_bundled_prices

    request = json.loads(sys.stdin.read())
    chdb = request["chdb"]
    client = connect(f"chdb://{chdb}")
    formatted: list[str] = []
    databases: set[str] = set()
    for call in request["calls"]:
        client.database = call.get("database") or "default"
        if call.get("database"):
            databases.add(call["database"])
        query, stdin = call.get("query"), call["stdin"]
        parameters = dict(call["params"])
        if query and _INPUT.search(query):  # INSERT ... FROM input(...) FORMAT X, data on stdin
            match = _INPUT.search(query)
            query = (
                query[: match.start()]
                + f"FROM format({match.group('format')}, {match.group('structure')}, {{llmtap_stdin:String}})"
            )
            parameters["llmtap_stdin"] = stdin
            statements = [query]
        elif query:
            statements = split_statements(query) if call["multiquery"] else [query]
        else:
            statements = split_statements(stdin)
        for statement in statements:
            if _ACCESS_CONTROL.match(statement):
                formatted.append(
                    client.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows[
                        0
                    ][0]
                )
            else:
                client.command(statement, parameters=parameters or None)
    replayed = sorted(databases)[0] if databases else ""
    client.close()

    def schema(database: str) -> dict[str, str]:
        rows = reference.query(
            "SELECT name, create_table_query FROM system.tables WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows
        return {name: ddl.replace(f"{database}.", "DB.") for name, ddl in rows}

    def prices(database: str) -> list[list[Any]]:
        rows = reference.query(
            f"SELECT Model, toString(ValidFrom), InputPerMillion, CachedInputPerMillion, OutputPerMillion, Source "
            f"FROM {database}.model_prices ORDER BY Model, ValidFrom"
        ).result_rows
        return [list(row) for row in rows]

    reference = connect(f"chdb://{chdb}?database={request['reference']}", create_database=True)
    migrate(reference)
    load_bundled_prices(reference)
    replayed_client = connect(f"chdb://{chdb}?database={replayed}")
    report = migrate(replayed_client)  # `llmtap db migrate` after the init script
    result = {
        "database": replayed,
        "schema": schema(replayed),
        "reference_schema": schema(request["reference"]),
        "prices": prices(replayed),
        "reference_prices": prices(request["reference"]),
        "runner_applied": [m.version for m in report.applied],
        "runner_changed": [m.version for m in report.changed_since_applied],
        "runner_already": [m.version for m in report.already_applied],
        "access_control": formatted,
    }
    replayed_client.close()
    reference.close()
    sys.stdout.write(json.dumps(result, default=str))
