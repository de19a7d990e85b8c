"""docker-compose.yml, checked without a Docker engine: it is a valid Compose file, every path it mounts exists,
images are pinned, ports stay on 127.0.0.1 unless asked, start order follows health, secrets come from .env, and
Grafana's provisioning and dashboards agree with what the stack provides."""

from __future__ import annotations

import json
import re
import subprocess

import jsonschema
import pytest
from compose_support import (
    AUTH_COMPOSE_FILE,
    COMPOSE_FILE,
    DATA,
    ENV_EXAMPLE,
    REPO,
    InterpolationError,
    bind_mounts,
    compose_model,
    env_file,
    interpolate,
    load_yaml,
    named_volumes,
    parse_port,
    user_env,
    variables_in,
)

CORE_SERVICES = {"clickhouse", "otel-collector", "grafana"}
DEMO_SERVICES = {"fake-openai", "demo-app"}


@pytest.fixture(scope="module")
def spec_validator():
    schema = json.loads((DATA / "compose-spec.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def model():
    return compose_model()


@pytest.fixture(scope="module")
def services(model):
    return model["services"]


def _errors(validator, document) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


@pytest.mark.parametrize("path", [COMPOSE_FILE, AUTH_COMPOSE_FILE], ids=lambda p: p.name)
def test_compose_files_follow_the_compose_specification(spec_validator, path):
    raw = load_yaml(path)
    assert _errors(spec_validator, raw) == []
    # And as rendered with a filled-in .env (interpolated values must still have the right shapes).
    assert _errors(spec_validator, interpolate(raw, user_env())) == []


def test_the_schema_check_rejects_what_compose_rejects(spec_validator):
    broken = load_yaml(COMPOSE_FILE)
    broken["services"]["clickhouse"]["healthcheck"]["intervall"] = "10s"
    broken["services"]["grafana"]["depends_on"]["clickhouse"]["condition"] = "service_ready"
    broken["services"]["otel-collector"]["volumez"] = []
    errors = _errors(spec_validator, broken)
    assert len(errors) == 3, errors


def test_the_stack_is_clickhouse_collector_grafana_plus_a_demo_profile(services):
    assert set(services) >= CORE_SERVICES | DEMO_SERVICES
    for name in CORE_SERVICES:
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"
    for name in DEMO_SERVICES:
        assert services[name]["profiles"] == ["demo"]
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")


def test_every_image_is_pinned_to_a_version(services):
    built_here = {service["image"] for service in services.values() if "build" in service}
    for name, service in services.items():
        image = service["image"]
        if image in built_here:
            assert image.endswith(":local"), f"{name}: a locally built image is tagged :local, got {image}"
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" in repository, f"{name}: {image} has no tag"
        assert tag != "latest" and re.fullmatch(r"\d+(\.\d+){2,3}", tag), (
            f"{name}: {image} is not a pinned version"
        )
    pinned = {s["image"] for s in services.values()} - built_here
    assert len({image.rpartition(":")[0] for image in pinned}) == len(pinned), "one version per image"


def test_grafana_preinstalls_a_pinned_clickhouse_plugin_and_is_closed_to_anonymous_users(services):
    env = services["grafana"]["environment"]
    plugins = env["GF_PLUGINS_PREINSTALL_SYNC"].split(",")
    assert any(re.fullmatch(r"grafana-clickhouse-datasource@\d+\.\d+\.\d+", p) for p in plugins), plugins
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == user_env()["GRAFANA_ADMIN_PASSWORD"]


def test_every_bind_mount_exists_in_the_repository(services):
    mounts = [(name, source, target) for name, s in services.items() for source, target in bind_mounts(s)]
    assert len(mounts) >= 8
    for name, source, target in mounts:
        path = (REPO / source).resolve()
        assert path.exists(), f"{name} mounts {source}, which does not exist"
        assert REPO in path.parents, f"{name} mounts {source} from outside the repository"
        container_is_dir = not re.search(r"\.(ya?ml|xml|sh|json|conf)$", target)
        assert path.is_dir() == container_is_dir, f"{name}: {source} -> {target} mixes a file and a directory"
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            assert (REPO / build["context"] / build["dockerfile"]).is_file(), f"{name}: missing Dockerfile"


def test_config_files_are_mounted_read_only(model):
    raw = load_yaml(COMPOSE_FILE)
    for name, service in raw["services"].items():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert volume.endswith(":ro"), f"{name}: {volume} should be read-only"


def test_state_lives_on_named_volumes(model, services):
    declared = set(model["volumes"])
    used = {source for s in services.values() for source, _ in named_volumes(s)}
    assert used == declared, "every named volume is declared and every declared volume is used"
    targets = {(name, target) for name, s in services.items() for _, target in named_volumes(s)}
    assert ("clickhouse", "/var/lib/clickhouse") in targets
    assert ("grafana", "/var/lib/grafana") in targets
    assert ("otel-collector", "/var/lib/otelcol/queue") in targets


def test_published_ports_bind_to_loopback_by_default(services):
    published = {}
    for name, service in services.items():
        for spec in service.get("ports", []):
            host_ip, port, target = parse_port(spec)
            assert host_ip == "127.0.0.1", f"{name} publishes {spec} beyond this machine"
            published[(name, target)] = port
    assert set(published) == {
        ("clickhouse", 8123),
        ("otel-collector", 4317),
        ("otel-collector", 4318),
        ("otel-collector", 13133),
        ("grafana", 3000),
    }, "publish only what a user needs: OTLP, health, ClickHouse HTTP for the CLI, Grafana"
    exposed = compose_model(user_env(LLMTAP_BIND_ADDRESS="0.0.0.0"))["services"]
    assert all(
        parse_port(spec)[0] == "0.0.0.0" for service in exposed.values() for spec in service.get("ports", [])
    ), "LLMTAP_BIND_ADDRESS opens every published port deliberately"


def test_start_order_follows_health(services):
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck for {name}"
            elif condition == "service_completed_successfully":
                assert dependency in one_shot, f"{dependency} is not a one-shot service"
            else:
                assert condition == "service_started"
                assert "healthcheck" not in services[dependency], (
                    f"{name} should wait for {dependency}'s health"
                )
    assert services["otel-collector"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert services["demo-app"]["depends_on"]["fake-openai"]["condition"] == "service_healthy"
    for name in set(services) - one_shot:
        assert services[name]["restart"] == "unless-stopped", name
    _assert_acyclic({name: set(s.get("depends_on", {})) for name, s in services.items()})


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"depends_on cycle: {' -> '.join((*path, node))}"
        if node not in done:
            for dependency in graph[node]:
                visit(dependency, (*path, node))
            done.add(node)

    for node in graph:
        visit(node, ())


def test_healthchecks_probe_real_readiness(services):
    clickhouse = " ".join(services["clickhouse"]["healthcheck"]["test"])
    # The image's init phase runs a server on 127.0.0.1 only: probing the container's own address waits for
    # the init script (migrations, users) to finish.
    assert "${HOSTNAME}:8123/ping" in clickhouse and "127.0.0.1" not in clickhouse
    assert "/api/health" in " ".join(services["grafana"]["healthcheck"]["test"])
    assert "/v1/models" in " ".join(services["fake-openai"]["healthcheck"]["test"])
    for name in ("clickhouse", "grafana", "fake-openai"):
        check = services[name]["healthcheck"]
        assert {"interval", "timeout", "retries"} <= set(check), name


def test_collector_queue_volume_is_given_to_the_collector_user(services):
    collector = services["otel-collector"]
    init = services["otel-collector-queue-init"]
    uid_gid = collector["user"]
    assert init["entrypoint"][:3] == ["chown", "-R", uid_gid]
    assert named_volumes(init) == [("collector-queue", "/var/lib/otelcol/queue")]
    assert named_volumes(init)[0] in named_volumes(collector)
    assert init["image"] == services["clickhouse"]["image"], "reuse an image the stack already pulls"


def test_memory_limits_fit_a_small_host(services):
    for name in ("clickhouse", "otel-collector"):
        memory = services[name]["deploy"]["resources"]["limits"]["memory"]
        assert re.fullmatch(r"\d+[mg]", memory), f"{name}: {memory}"


def test_every_variable_is_documented_in_env_example_and_passwords_are_not_committed():
    example = env_file()
    referenced = set()
    for path in (COMPOSE_FILE, AUTH_COMPOSE_FILE):
        referenced |= variables_in(load_yaml(path))
    referenced.discard("HOSTNAME")  # the container's own, escaped as $${HOSTNAME}
    assert referenced <= set(example), f"not in .env.example: {sorted(referenced - set(example))}"
    secrets = {key for key in example if key.endswith(("PASSWORD", "TOKEN"))}
    assert secrets == {*(k for k in user_env() if k.endswith(("PASSWORD", "TOKEN")))}
    assert all(example[key] == "" for key in secrets), ".env.example must not carry passwords"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=REPO, capture_output=True, check=False
    ).returncode
    assert ignored == 0, ".env must be git-ignored"
    raw = load_yaml(COMPOSE_FILE)
    for name, service in raw["services"].items():
        for key, value in service.get("environment", {}).items():
            if key.endswith(("PASSWORD", "TOKEN")):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), f"{name}.{key} must come from .env: {value}"


def test_missing_passwords_stop_compose_with_a_clear_message():
    for key in (
        "CLICKHOUSE_ADMIN_PASSWORD",
        "CLICKHOUSE_WRITER_PASSWORD",
        "CLICKHOUSE_READER_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    ):
        with pytest.raises(InterpolationError, match=f"{key}.*\\.env"):
            compose_model(user_env(**{key: ""}))
    with pytest.raises(InterpolationError, match="LLMTAP_OTLP_TOKEN"):
        compose_model(user_env(LLMTAP_OTLP_TOKEN=""), path=AUTH_COMPOSE_FILE)


def test_the_same_variables_name_the_users_on_both_sides(services):
    clickhouse = services["clickhouse"]["environment"]
    collector = services["otel-collector"]["environment"]
    grafana = services["grafana"]["environment"]
    assert collector["CLICKHOUSE_WRITER_USER"] == clickhouse["CLICKHOUSE_WRITER_USER"] == "llmtap_writer"
    assert collector["CLICKHOUSE_WRITER_PASSWORD"] == clickhouse["CLICKHOUSE_WRITER_PASSWORD"]
    assert grafana["CLICKHOUSE_READER_USER"] == clickhouse["CLICKHOUSE_READER_USER"] == "llmtap_reader"
    assert grafana["CLICKHOUSE_READER_PASSWORD"] == clickhouse["CLICKHOUSE_READER_PASSWORD"]
    assert clickhouse["CLICKHOUSE_USER"] not in (
        collector["CLICKHOUSE_WRITER_USER"],
        grafana["CLICKHOUSE_READER_USER"],
    )
    databases = {clickhouse["LLMTAP_DATABASE"], collector["LLMTAP_DATABASE"], grafana["LLMTAP_DATABASE"]}
    from llmtap.clickhouse.connection import DEFAULT_DATABASE

    assert databases == {DEFAULT_DATABASE}


def test_the_auth_override_turns_on_the_collector_overlay():
    override = compose_model(path=AUTH_COMPOSE_FILE)["services"]
    base = load_yaml(COMPOSE_FILE)["services"]
    command = override["otel-collector"]["command"]
    assert command[0] == base["otel-collector"]["command"][0]
    mounted = {target for _, target in bind_mounts(base["otel-collector"])}
    for arg in command:
        assert arg.startswith("--config=") and arg.removeprefix("--config=") in mounted
    assert override["otel-collector"]["environment"]["LLMTAP_OTLP_TOKEN"] == user_env()["LLMTAP_OTLP_TOKEN"]
    headers = override["demo-app"]["environment"]["OTEL_EXPORTER_OTLP_HEADERS"]
    assert headers == "Authorization=Bearer%20" + user_env()["LLMTAP_OTLP_TOKEN"]
    assert "docker-compose.auth.yml" in ENV_EXAMPLE.read_text(encoding="utf-8")


# --- The demo profile ---------------------------------------------------------------------------------------------


def test_the_demo_image_installs_the_package_from_every_folder_it_maps():
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    package_dir = re.search(r"^package-dir = \{(.*)\}$", pyproject, re.MULTILINE).group(1)
    folders = {path.split("/")[0] for path in re.findall(r'"[\w.]+" = "([\w/]+)"', package_dir)}
    assert {"src", "examples", "fake_openai"} <= folders
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile, re.MULTILINE))
    assert folders <= copied, f"the Dockerfile misses {sorted(folders - copied)}"
    base = re.search(r"^FROM (\S+)", dockerfile, re.MULTILINE).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", base), base
    assert re.search(r'pip install "\.\[demo\]"', dockerfile)
    assert re.search(r"^USER (?!root)", dockerfile, re.MULTILINE), "the demo runs unprivileged"
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".env"} <= set(ignored)


def test_the_demo_runs_the_fake_server_and_the_sample_app_of_this_package(services):
    from llmtap.cli import SUBCOMMANDS

    fake = services["fake-openai"]["command"]
    assert fake[:2] == ["llmtap", "fake-openai"] and "fake-openai" in SUBCOMMANDS
    assert fake[fake.index("--host") + 1] == "0.0.0.0", "reachable from the other containers"
    app = services["demo-app"]
    script = app["command"][-1]
    module = re.search(r"python -m ([\w.]+)", script).group(1)
    assert module == "llmtap.examples.sample_app" and (REPO / "examples" / "sample_app.py").is_file()
    assert "opentelemetry-instrument" in script
    env = app["environment"]
    port = fake[fake.index("--port") + 1]
    assert env["OPENAI_BASE_URL"] == f"http://fake-openai:{port}/v1"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert services["fake-openai"]["image"] == app["image"]
    assert "service.namespace=" in env["OTEL_RESOURCE_ATTRIBUTES"]


# --- Grafana provisioning and dashboards (grafana/) ---------------------------------------------------------------

PROVISIONING = REPO / "grafana" / "provisioning"
DASHBOARDS = REPO / "grafana" / "dashboards"


def _provisioning_files(kind: str, optional: bool = False) -> list:
    files = sorted((PROVISIONING / kind).glob("*.y*ml")) if (PROVISIONING / kind).is_dir() else []
    if not files and not optional:
        pytest.skip(f"grafana/provisioning/{kind} has not landed yet")
    return files


def test_provisioning_only_uses_variables_the_grafana_service_sets(services):
    # Grafana expands $NAME / ${NAME} from its environment in datasource and dashboard-provider files (and in
    # alert labels and contact points, but not in alert queries or annotations, where $__timeFilter and $labels
    # live). An unset name silently becomes an empty string.
    files = [
        path for kind in ("datasources", "dashboards", "plugins") for path in _provisioning_files(kind, True)
    ]
    if not files:
        pytest.skip("grafana/provisioning has not landed yet")
    env = services["grafana"]["environment"]
    for path in files:
        text = "\n".join(
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if not line.lstrip().startswith("#")
        )
        names = {
            a or b for a, b in re.findall(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", text.replace("$$", ""))
        }
        missing = names - set(env)
        assert not missing, f"{path.relative_to(REPO)} uses {sorted(missing)}, not set on the grafana service"


def test_provisioned_datasource_is_the_one_the_dashboards_use_with_the_reader(services):
    datasources = [
        ds
        for path in _provisioning_files("datasources")
        for ds in (load_yaml(path) or {}).get("datasources", [])
    ]
    clickhouse = [ds for ds in datasources if ds.get("type") == "grafana-clickhouse-datasource"]
    assert len(clickhouse) >= 1
    env = services["grafana"]["environment"]
    for ds in (interpolate(ds, env) for ds in clickhouse):
        blob = json.dumps(ds)
        assert env["CLICKHOUSE_READER_USER"] in blob, "Grafana connects as the read-only user"
        assert env["CLICKHOUSE_READER_PASSWORD"] in json.dumps(ds.get("secureJsonData", {})), (
            "password is secure"
        )
    uids = {ds["uid"] for ds in clickhouse}
    dashboards = sorted(DASHBOARDS.glob("*.json")) if DASHBOARDS.is_dir() else []
    if not dashboards:
        pytest.skip("grafana/dashboards has not landed yet")
    checked = 0
    for path in dashboards:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
        for ref in _datasource_refs(dashboard):
            uid = ref.get("uid", "")
            variable = re.fullmatch(r"\$\{?(\w+)\}?", uid)
            if variable:  # a datasource variable: its default must be the provisioned datasource
                chosen = variables[variable.group(1)]
                assert chosen["type"] == "datasource" and chosen["query"] == "grafana-clickhouse-datasource"
                uid = chosen["current"]["value"]
            if ref.get("type") == "grafana-clickhouse-datasource":
                assert uid in uids, f"{path.name} uses datasource {uid!r}, provisioned: {sorted(uids)}"
                checked += 1
    assert checked, "no dashboard panel names the ClickHouse datasource"
    for path in _provisioning_files("alerting", True):
        for group in (load_yaml(path) or {}).get("groups", []):
            for rule in group.get("rules", []):
                for query in rule.get("data", []):
                    if query.get("datasourceUid") not in ("__expr__", None):
                        assert query["datasourceUid"] in uids, f"{path.name}: rule {rule.get('title')}"


def _datasource_refs(node):
    """Every `datasource` reference object in a dashboard."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                yield value
            else:
                yield from _datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasource_refs(item)


def test_dashboard_provider_reads_the_mounted_dashboards(services):
    providers = [
        p for path in _provisioning_files("dashboards") for p in (load_yaml(path) or {}).get("providers", [])
    ]
    assert providers
    mounted = {
        target for source, target in bind_mounts(services["grafana"]) if source == "./grafana/dashboards"
    }
    paths = {p["options"]["path"].rstrip("/") for p in providers}
    assert paths & mounted, (
        f"dashboard providers read {paths}, the compose file mounts dashboards at {mounted}"
    )
