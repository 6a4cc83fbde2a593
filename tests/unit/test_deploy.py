"""The container files agree with the code they run, checked without Docker.

``Dockerfile``, ``docker-compose.yml`` and ``deploy/`` (Prometheus, Grafana)
name things defined elsewhere: CLI commands and options, configuration keys,
files of the repo, service names and ports, metric names. No container
engine runs where the tests do, so each test here reads the files and checks
every such name against its source: the click command tree, the config
loader, the repo's tree and a scrape of the worker's metrics registry
(built as `driftline worker` builds it, with no broker). `promtool`, when
installed (scripts/test-deps), also parses the Prometheus config and every
PromQL expression of the dashboard.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from driftline.cli import main
from driftline.core.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"

# Images a service may use other than the one built from the repo's
# Dockerfile: the projects' own images, each pinned to a release.
OFFICIAL_IMAGES = {"apache/kafka", "prom/prometheus", "grafana/grafana"}
PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+$")
PYTHON_BASE = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?$")
DEFAULT_PORTS = {"prometheus": 9090, "grafana": 3000}

# --------------------------------------------------------------------------- reading the files


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's variable substitution with no variable set: ``${X:-d}`` -> ``d``."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else (m.group(3) or ""), value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def load_yaml(path: Path) -> Any:
    with path.open() as fh:
        return yaml.safe_load(fh)


def load_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


COMPOSE: dict[str, Any] = interpolate(load_yaml(COMPOSE_FILE))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def dockerfile_exec_form(instr: str) -> list[str]:
    """The last ENTRYPOINT or CMD, which must be in exec (JSON) form."""
    found = [args for name, args in dockerfile_instructions() if name == instr]
    assert found, f"Dockerfile: no {instr}"
    value = json.loads(found[-1])
    assert isinstance(value, list), f"Dockerfile: {instr} must be a JSON array (exec form)"
    return value


def built_from_repo(service: dict[str, Any]) -> bool:
    return "build" in service


def driftline_services() -> list[str]:
    return [name for name, svc in SERVICES.items() if built_from_repo(svc)]


def service_argv(name: str) -> list[str]:
    """The arguments the `driftline` entrypoint gets in service ``name``."""
    svc = SERVICES[name]
    assert "entrypoint" not in svc, f"{name}: keep the image's entrypoint (driftline)"
    command = svc.get("command")
    if command is None:
        return dockerfile_exec_form("CMD")
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def service_env(name: str) -> dict[str, str]:
    env = SERVICES[name].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def bind_mounts(name: str) -> list[tuple[str, str]]:
    """(source as written, target) of each bind mount of service ``name``."""
    mounts = []
    for vol in SERVICES[name].get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                mounts.append((vol["source"], vol["target"]))
            continue
        source, target = vol.split(":")[:2]
        if source.startswith((".", "/", "~")):  # otherwise a named volume
            mounts.append((source, target))
    return mounts


def repo_path(name: str, container_path: str) -> Path:
    """The repo file that service ``name`` sees at ``container_path``."""
    best: tuple[str, str] | None = None
    for source, target in bind_mounts(name):
        t = target.rstrip("/")
        if (container_path == t or container_path.startswith(t + "/")) and (
            best is None or len(t) > len(best[1])
        ):
            best = (source, t)
    assert best is not None, f"{name}: nothing of the repo is mounted at {container_path}"
    source, target = best
    return (ROOT / source / container_path[len(target) :].lstrip("/")).resolve()


def published_ports(name: str) -> list[tuple[int, int]]:
    """(host port, container port) of each port service ``name`` publishes."""
    out = []
    for spec in SERVICES[name].get("ports") or []:
        if isinstance(spec, dict):
            out.append((int(spec["published"]), int(spec["target"])))
            continue
        parts = str(spec).split("/")[0].split(":")
        out.append((int(parts[-2]), int(parts[-1])))
    return out


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ with no DRIFTLINE_* variable but those of ``env``."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("DRIFTLINE_")]:
            del os.environ[key]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def parse_cli(argv: list[str], env: dict[str, str]) -> tuple[click.Command, dict[str, Any]]:
    """Resolve ``driftline ARGV`` as click would, without running it.

    Raises click's usage errors for an unknown command or option, a missing
    value or a value of the wrong type, as the container would at start.
    """
    with environment(env):
        ctx = click.Context(main, info_name="driftline")
        cmd: click.Command = main
        args = list(argv)
        path: list[str] = []
        while isinstance(cmd, click.Group):
            where = " ".join(["driftline", *path])
            if not args:
                raise click.UsageError(f"`{where}` needs a subcommand")
            sub = cmd.get_command(ctx, args[0])
            if sub is None:
                raise click.UsageError(f"no such command {args[0]!r} in `{where}`")
            path.append(args.pop(0))
            if isinstance(sub, click.Group):
                ctx = click.Context(sub, info_name=path[-1], parent=ctx)
            cmd = sub
        leaf = cmd.make_context(path[-1], args, parent=ctx)
        return cmd, leaf.params


def envvars_of(cmd: click.Command) -> set[str]:
    out: set[str] = set()
    for param in cmd.params:
        env = getattr(param, "envvar", None)
        if isinstance(env, str):
            out.add(env)
        elif env:
            out.update(env)
    return out


# --------------------------------------------------------------------------- metric names


def sample_names(name: str, kind: str) -> set[str]:
    """The sample names Prometheus stores for a metric family ``name`` of type ``kind``."""
    if kind == "counter":
        base = name.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
    return {name}


def scrape_worker_metrics() -> str:
    """What a fresh worker's ``/metrics`` serves, without a broker or a web server.

    Builds the worker's app and state as ``driftline worker`` does (nothing
    connects before the app starts), registers its collectors the way
    :func:`~driftline.streaming.metrics.install_metrics` does, on a registry of
    their own, and renders that registry in the exposition format. A fresh
    worker has no model yet, but every family is rendered with its HELP and
    TYPE lines, so every name is there.
    """
    import faust
    from prometheus_client import generate_latest

    from driftline.streaming.app import WorkerSettings, make_app
    from driftline.streaming.metrics import install_metrics

    config = load_config(env={})
    with tempfile.TemporaryDirectory() as tmp:
        _app, state = make_app(config, WorkerSettings(data_dir=tmp))
        # A second app only to host the page install_metrics adds; make_app's
        # app has its own /metrics already.
        probe = faust.App(f"{config.app_id}-metrics-probe", datadir=tmp)
        registry = install_metrics(probe, state, config)
        return generate_latest(registry).decode()


@functools.cache
def exported_metric_names() -> frozenset[str]:
    """Every sample name the worker's ``/metrics`` can show: a scrape, parsed."""
    from prometheus_client.parser import text_string_to_metric_families

    families = text_string_to_metric_families(scrape_worker_metrics())
    return frozenset().union(*(sample_names(f.name, f.type) for f in families))


_PROMQL_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_DRIFTLINE_NAME = re.compile(r"\b(driftline_[a-z0-9_]+)")


def metric_names_in(expr: str) -> set[str]:
    """The driftline_* identifiers of a PromQL expression (string literals skipped)."""
    return set(_DRIFTLINE_NAME.findall(_PROMQL_STRING.sub('""', expr)))


# --------------------------------------------------------------------------- the dashboard


def dashboards() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep theirs inside


def promql_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expression) of every query: panels, template variables, annotations."""
    out = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append(
                    (f"panel {panel.get('title')!r} query {target.get('refId')}", target["expr"])
                )
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if var.get("type") == "query" and query:
            out.append((f"variable ${var['name']}", query))
    for ann in dashboard.get("annotations", {}).get("list", []):
        expr = ann.get("expr") or (ann.get("target") or {}).get("expr")
        if expr:
            out.append((f"annotation {ann.get('name')!r}", expr))
    return out


def provisioned_datasources() -> list[dict[str, Any]]:
    directory = repo_path("grafana", grafana_provisioning_dir()) / "datasources"
    out = []
    for path in sorted(directory.glob("*.y*ml")):
        out.extend(load_yaml(path).get("datasources") or [])
    return out


def grafana_provisioning_dir() -> str:
    return service_env("grafana").get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning")


def prometheus_config_path() -> Path:
    flags = [a for a in service_argv_raw("prometheus") if a.startswith("--config.file=")]
    container_path = flags[-1].split("=", 1)[1] if flags else "/etc/prometheus/prometheus.yml"
    return repo_path("prometheus", container_path)


def service_argv_raw(name: str) -> list[str]:
    command = SERVICES[name].get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def worker_service() -> str:
    workers = [n for n in driftline_services() if service_argv(n)[:1] == ["worker"]]
    assert len(workers) == 1, f"expected one service running `driftline worker`, got {workers}"
    return workers[0]


def worker_web_port() -> int:
    name = worker_service()
    _, params = parse_cli(service_argv(name), service_env(name))
    return int(params["web_port"])


def dockerignore_patterns() -> list[tuple[bool, str]]:
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            out.append((negate, line.lstrip("!").strip("/")))
    return out


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last match wins)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, pattern in dockerignore_patterns():
        if any(fnmatch(c, pattern) for c in candidates):
            excluded = not negate
    return excluded


# =========================================================================== tests


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_image_is_pinned_python_311_slim():
    bases = [args.split()[0] for name, args in dockerfile_instructions() if name == "FROM"]
    defaults = {
        k: v
        for name, args in dockerfile_instructions()
        if name == "ARG" and "=" in args
        for k, v in [args.split("=", 1)]
    }
    resolved = [defaults.get(b[2:-1], b) if b.startswith("${") else b for b in bases]
    assert resolved, "Dockerfile: no FROM"
    for image in resolved:
        assert PYTHON_BASE.match(image), (
            f"Dockerfile: base image {image!r} is not a pinned python:3.11.N-slim"
        )


def test_dockerfile_installs_the_package_as_a_non_root_user():
    instrs = dockerfile_instructions()
    runs = " ".join(args for name, args in instrs if name == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs), "install the package from the build context"
    assert "-e " not in runs and "--editable" not in runs, (
        "the image must not use an editable install"
    )
    assert "[dev]" not in runs, "the image must not install the dev extra"
    users = [args for name, args in instrs if name == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root USER"


def test_dockerfile_entrypoint_is_the_console_script_and_cmd_a_valid_worker():
    scripts = load_toml(ROOT / "pyproject.toml")["project"]["scripts"]
    assert dockerfile_exec_form("ENTRYPOINT") == ["driftline"]
    assert scripts.get("driftline") == "driftline.cli:main"
    cmd, params = parse_cli(dockerfile_exec_form("CMD"), {})
    assert cmd.name == "worker"
    assert params["web_host"] == "0.0.0.0", "the worker must bind every interface in a container"
    exposed = {
        int(p.split("/")[0])
        for n, a in dockerfile_instructions()
        if n == "EXPOSE"
        for p in a.split()
    }
    assert int(params["web_port"]) in exposed, "EXPOSE the worker's web port"


def test_dockerignore_keeps_local_state_out_but_not_what_the_build_copies():
    for local in (
        ".venv",
        ".cache",
        ".git",
        ".hypothesis",
        ".pytest_cache",
        ".driftline-data",
        "tests",
    ):
        assert dockerignored(local), f".dockerignore must exclude {local}"
    copies = [
        src
        for name, args in dockerfile_instructions()
        if name == "COPY" and "--from=" not in args
        for src in args.split()[:-1]
        if not src.startswith("--")
    ]
    assert copies
    for src in copies:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repo"
        assert not dockerignored(src), f".dockerignore excludes {src}, which the Dockerfile copies"
    assert not dockerignored("src/driftline/cli.py")
    assert dockerignored("src/driftline/__pycache__/cli.cpython-311.pyc")


# --------------------------------------------------------------------------- docker-compose.yml


def test_every_image_is_official_and_pinned_or_built_from_the_repo():
    for name, svc in SERVICES.items():
        if built_from_repo(svc):
            build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
            context = (ROOT / build.get("context", ".")).resolve()
            assert context == ROOT, f"{name}: build context must be the repo root"
            assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
            continue
        image = svc.get("image", "")
        repo, _, tag = image.rpartition(":")
        assert repo in OFFICIAL_IMAGES, f"{name}: {image!r} is not one of {sorted(OFFICIAL_IMAGES)}"
        assert PINNED_TAG.match(tag), f"{name}: {image!r} is not pinned to a release (x.y.z)"


def test_every_bind_mount_is_a_path_of_the_repo():
    for name in SERVICES:
        for source, target in bind_mounts(name):
            assert source.startswith("./"), f"{name}: mount {source} must be relative to the repo"
            path = (ROOT / source).resolve()
            assert path.is_relative_to(ROOT), f"{name}: {source} leaves the repo"
            assert path.exists(), f"{name}: mounts {source} on {target}, but it does not exist"


def test_driftline_services_run_real_cli_commands_with_real_options():
    names = driftline_services()
    assert {service_argv(n)[0] for n in names} >= {"topics", "worker", "simulate"}
    for name in names:
        argv = service_argv(name)
        try:
            parse_cli(argv, service_env(name))
        except click.ClickException as exc:
            pytest.fail(
                f"{name}: `driftline {' '.join(argv)}` is not a valid command:"
                f" {exc.format_message()}"
            )


def test_driftline_environment_variables_are_config_keys_or_cli_variables():
    for name in driftline_services():
        env = {k: v for k, v in service_env(name).items() if k.startswith("DRIFTLINE_")}
        cmd, _ = parse_cli(service_argv(name), service_env(name))
        # The command loads the config with its whole environment: any DRIFTLINE_*
        # variable that is no config key (a CLI-only one too) fails the start.
        try:
            load_config(env=env)
        except ConfigError as exc:
            pytest.fail(
                f"{name}: its DRIFTLINE_* environment is refused by the config loader: {exc}"
            )
        for var in env:
            assert var in envvars_of(cmd) or var_is_config_key(var), (
                f"{name}: {var} is neither a config key nor an option of `driftline {cmd.name}`"
            )


def var_is_config_key(var: str) -> bool:
    try:
        load_config(env={var: "1"})
    except ConfigError as exc:
        return "unknown key" not in str(exc)
    return True


def test_driftline_services_reach_kafka_inside_compose():
    kafka_listeners = service_env("kafka")["KAFKA_ADVERTISED_LISTENERS"].split(",")
    internal = {lst.split("://", 1)[1] for lst in kafka_listeners if lst.startswith("PLAINTEXT://")}
    for name in driftline_services():
        broker = service_env(name).get("DRIFTLINE_BROKER", "")
        assert broker.removeprefix("kafka://") in internal, (
            f"{name}: DRIFTLINE_BROKER={broker!r} is not Kafka's in-compose listener {internal}"
        )


def test_start_order_uses_health_and_completion():
    def condition(name: str, dep: str) -> str:
        deps = SERVICES[name].get("depends_on") or {}
        assert isinstance(deps, dict) and dep in deps, f"{name} must depend on {dep}"
        return deps[dep]["condition"]

    worker = worker_service()
    topics = next(n for n in driftline_services() if service_argv(n)[:2] == ["topics", "create"])
    simulator = next(n for n in driftline_services() if service_argv(n)[0] == "simulate")
    assert condition(topics, "kafka") == "service_healthy"
    assert condition(worker, topics) == "service_completed_successfully"
    assert condition(simulator, worker) == "service_healthy"
    assert condition("grafana", "prometheus") == "service_healthy"
    for name in ("kafka", worker, "prometheus"):
        assert "healthcheck" in SERVICES[name], f"{name} needs a healthcheck for depends_on"
    assert SERVICES[simulator].get("profiles") == ["demo"], (
        "the simulator runs only under --profile demo"
    )
    assert SERVICES[topics].get("restart", "no") == "no", "the topic creation runs once"


def test_worker_healthcheck_asks_its_own_healthz():
    test = SERVICES[worker_service()]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], "python is the one HTTP client in the slim image"
    code = test[3]
    compile(code, "healthcheck", "exec")
    url = f"http://127.0.0.1:{worker_web_port()}/healthz"
    assert url in code, f"the worker's healthcheck must ask {url}"


def test_worker_service_listens_on_every_interface_of_its_container():
    name = worker_service()
    _, params = parse_cli(service_argv(name), service_env(name))
    assert params["web_host"] == "0.0.0.0", (
        f"{name}: the worker binds {params['web_host']}, which Prometheus and the published"
        " port cannot reach; pass --web-host 0.0.0.0"
    )


def test_published_ports_match_the_worker_and_the_defaults():
    web_port = worker_web_port()
    worker = worker_service()
    assert (web_port, web_port) in published_ports(worker), (
        f"{worker}: publish its web port {web_port} (`--web-port`) as {web_port}:{web_port},"
        f" got {published_ports(worker)}"
    )
    for name, port in DEFAULT_PORTS.items():
        assert (port, port) in published_ports(name), f"{name}: publish its default port {port}"
    for name in SERVICES:
        for spec in SERVICES[name].get("ports") or []:
            assert str(spec).startswith("127.0.0.1:"), f"{name}: publish {spec} on 127.0.0.1 only"


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_scrapes_the_worker_service():
    config = load_yaml(prometheus_config_path())
    targets = {
        target
        for job in config["scrape_configs"]
        if job.get("metrics_path", "/metrics") == "/metrics"
        for static in job.get("static_configs", [])
        for target in static.get("targets", [])
    }
    assert f"{worker_service()}:{worker_web_port()}" in targets, (
        f"{prometheus_config_path().relative_to(ROOT)} must scrape {worker_service()}:"
        f"{worker_web_port()} (the worker's service name inside compose), got {sorted(targets)}"
    )


def test_prometheus_rule_files_are_next_to_the_config():
    path = prometheus_config_path()
    for rule_file in load_yaml(path).get("rule_files") or []:
        assert (path.parent / rule_file).exists(), (
            f"{path.relative_to(ROOT)} loads {rule_file},"
            f" which is not in {path.parent.relative_to(ROOT)}/"
        )


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (scripts/test-deps)"
)
def test_promtool_accepts_the_compose_prometheus_config():
    result = subprocess.run(
        ["promtool", "check", "config", str(prometheus_config_path())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- Grafana


def test_grafana_provisioning_and_dashboards_are_mounted_where_grafana_reads_them():
    provisioning = repo_path("grafana", grafana_provisioning_dir())
    assert (provisioning / "datasources").is_dir() and (provisioning / "dashboards").is_dir()
    providers = [
        p
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for p in load_yaml(path).get("providers") or []
    ]
    assert providers, "no dashboard provider"
    for provider in providers:
        directory = repo_path("grafana", provider["options"]["path"])
        assert directory == DASHBOARD_DIR.resolve(), (
            f"provider {provider['name']} reads {directory}"
        )
    home = service_env("grafana").get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert repo_path("grafana", home).is_file()


def test_grafana_datasource_is_the_compose_prometheus():
    sources = provisioned_datasources()
    assert [s["type"] for s in sources] == ["prometheus"]
    url = sources[0]["url"]
    assert url == f"http://prometheus:{DEFAULT_PORTS['prometheus']}", url
    scrape = load_yaml(prometheus_config_path()).get("global", {}).get("scrape_interval")
    assert sources[0].get("jsonData", {}).get("timeInterval") == scrape, (
        "the datasource's timeInterval should be Prometheus' scrape interval"
    )


def test_dashboards_are_valid_and_every_panel_has_the_provisioned_datasource():
    uids = {s["uid"] for s in provisioned_datasources()}
    assert dashboards(), "no dashboard in deploy/grafana/dashboards"
    for path in dashboards():
        dashboard = json.loads(path.read_text())
        assert dashboard.get("uid") and dashboard.get("title"), f"{path.name}: needs uid and title"
        ids = [p["id"] for p in all_panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in all_panels(dashboard):
            if panel["type"] == "row":
                continue
            where = f"{path.name}: panel {panel.get('title')!r}"
            assert panel.get("datasource", {}).get("uid") in uids, (
                f"{where}: no provisioned datasource"
            )
            assert panel.get("targets"), f"{where}: no query"
            for target in panel["targets"]:
                assert target.get("datasource", panel["datasource"])["uid"] in uids, where
                assert target.get("expr"), f"{where}: query {target.get('refId')} has no expression"
        for var in dashboard.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                assert var.get("datasource", {}).get("uid") in uids, f"{path.name}: ${var['name']}"


def test_dashboard_has_the_model_and_version_variables_and_alert_annotations():
    dashboard = json.loads((DASHBOARD_DIR / "driftline.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("model", "version"):
        query = variables[name]["query"]
        query = query["query"] if isinstance(query, dict) else query
        assert query.startswith("label_values("), f"${name} must come from label_values()"
    annotations = [a.get("expr", "") for a in dashboard["annotations"]["list"]]
    assert any("driftline_alerts_firing" in a for a in annotations), "alerts must be annotated"


def test_dashboard_queries_only_metrics_the_worker_exports():
    exported = exported_metric_names()
    source = "a scrape of the worker's metrics registry"
    missing = []
    for path in dashboards():
        for where, expr in promql_expressions(json.loads(path.read_text())):
            missing += [
                f"{path.name}: {where}: {n}" for n in sorted(metric_names_in(expr) - exported)
            ]
    assert not missing, f"not exported (according to {source}):\n" + "\n".join(missing)


def test_dashboard_jobs_are_the_scrape_jobs():
    jobs = {job["job_name"] for job in load_yaml(prometheus_config_path())["scrape_configs"]}
    for path in dashboards():
        for where, expr in promql_expressions(json.loads(path.read_text())):
            for job in re.findall(r'job\s*=\s*"([^"]*)"', expr):
                assert job in jobs, f"{path.name}: {where}: no scrape job {job!r} (have {jobs})"


def grafana_to_promql(expr: str) -> str:
    """A Grafana query with its variables replaced by values PromQL can parse."""
    label_values = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr.strip(), re.S)
    if label_values:
        expr = label_values.group(1)
    for var, value in (
        ("$__rate_interval", "1m"),
        ("$__interval", "1m"),
        ("$model", "m"),
        ("$version", ".*"),
    ):
        expr = expr.replace(var, value)
    return expr


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (scripts/test-deps)"
)
def test_promtool_parses_every_dashboard_expression(tmp_path):
    rules = []
    where_of = {}
    for path in dashboards():
        for where, expr in promql_expressions(json.loads(path.read_text())):
            record = f"dashboard:query_{len(rules)}"
            where_of[record] = f"{path.name}: {where}"
            rules.append({"record": record, "expr": grafana_to_promql(expr)})
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- the helpers themselves


def test_exported_metric_names_come_from_a_scrape_of_the_worker():
    names = exported_metric_names()
    assert "driftline_predictions_total" in names  # a counter, with its suffix
    assert "driftline_outcome_delay_seconds_bucket" in names  # a histogram's buckets
    assert "driftline_model_metric" in names  # a gauge
    assert "driftline_predictions" not in names
    assert sample_names("driftline_x", "counter") == {"driftline_x_total", "driftline_x_created"}


def test_metric_names_in_skips_label_values_and_variables():
    expr = (
        'sum by (topic) (rate(driftline_dead_letters_total{topic="driftline_x"}[$__rate_interval]))'
    )
    assert metric_names_in(expr) == {"driftline_dead_letters_total"}


def test_interpolate_uses_compose_defaults():
    assert interpolate("127.0.0.1:${KAFKA_HOST_PORT:-9092}:9092") == "127.0.0.1:9092:9092"
    assert interpolate("$${HOME}") == "${HOME}"
