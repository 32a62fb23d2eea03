"""The Docker deployment files, checked without a Docker engine: structure, images, ports,
healthchecks, dependency conditions, the one Dockerfile, no committed admin token, and a stack
that scales (`--scale ingress=2 --scale worker=3 --scale notifier=2`: a load balancer in front
of the ingress replicas, no host port or identity pinned on a scaled service, every replica
scraped)."""

from __future__ import annotations

import base64
import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
HOOKSTREAM = {"admin": 8081, "ingress": 8080, "worker": 8082, "notifier": 8083, "survey": 8084}
COMMAND = {"survey": "survey-page"}  # the `hookstream` command of each service, if not its name
PORT_SETTING = {"admin": "ADMIN_PORT", "ingress": "INGRESS_PORT", "worker": "WORKER_PORT",
                "notifier": "NOTIFIER_PORT", "survey": "SURVEY_PORT"}
INFRA = ("kafka", "postgres", "mailpit")
# The services the deployment runs in several replicas, and how many the scaling test assumes.
SCALED = {"ingress": 2, "worker": 3, "notifier": 2}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):  # the "KEY=value" list form
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port of the service's `ports` (short syntax)."""
    out = {}
    for spec in service.get("ports", []):
        parts = str(spec).split("/")[0].split(":")
        out[int(parts[-1])] = int(parts[-2]) if len(parts) > 1 else int(parts[-1])
    return out


def test_services_exist(services: dict[str, Any]) -> None:
    assert set(INFRA) | set(HOOKSTREAM) <= set(services)


def test_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable"), name


def test_depends_on_waits_for_healthy(services: dict[str, Any]) -> None:
    expected = {"admin": {"kafka", "postgres"}, "ingress": {"kafka", "admin"},
                "worker": {"kafka", "admin"}, "notifier": {"kafka", "admin"},
                "survey": {"postgres", "notifier"}}
    for name, needs in expected.items():
        deps = services[name]["depends_on"]
        assert isinstance(deps, dict), f"{name}: depends_on needs the long form with conditions"
        assert needs <= set(deps), name
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert spec == {"condition": "service_healthy"} or (
                spec.get("condition") == "service_healthy"), f"{name} -> {dep}"
            assert services[dep].get("healthcheck"), f"{dep} must be checkable for {name}"
    # No cycle: compose would refuse to start.
    graph = {n: set(s.get("depends_on") or {}) for n, s in services.items()}
    done: set[str] = set()
    while graph.keys() - done:
        ready = {n for n in graph.keys() - done if graph[n] <= done}
        assert ready, f"depends_on cycle among {sorted(graph.keys() - done)}"
        done |= ready


def test_kafka_is_apache_kafka_4_in_kraft_mode(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    assert re.fullmatch(r"4\.\d+\.\d+", tag), f"pin a 4.x release, got {tag!r}"
    e = env(kafka)
    assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = e["KAFKA_NODE_ID"]
    listeners = dict(reversed(item.split("://", 1)) for item in e["KAFKA_LISTENERS"].split(","))
    by_name = {v: k for k, v in listeners.items()}
    controller = e["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert e["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:{by_name[controller].strip(':')}"
    assert by_name["PLAINTEXT"] == ":9092"
    assert "PLAINTEXT://kafka:9092" in e["KAFKA_ADVERTISED_LISTENERS"].split(",")
    protocols = dict(item.split(":") for item in e["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
                     .split(","))
    assert set(by_name) <= set(protocols)
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert e[key] == "1", key
    # kafka-storage format wants a base64url-encoded 16-byte UUID.
    cluster_id = e["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    test = " ".join(kafka["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in test


def test_postgres_and_mailpit(services: dict[str, Any]) -> None:
    pg = services["postgres"]
    assert pg["image"].split(":")[0] == "postgres"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert env(pg)["POSTGRES_DB"] == "hookstream"
    mail = services["mailpit"]
    assert mail["image"].split(":")[0] == "axllent/mailpit"
    assert {1025, 8025} <= set(published(mail))


@pytest.mark.parametrize("name", HOOKSTREAM)
def test_hookstream_service(services: dict[str, Any], name: str) -> None:
    svc = services[name]
    build = svc["build"]
    assert build["dockerfile"] == "deploy/Dockerfile"
    assert (REPO / build.get("context", ".") / build["dockerfile"]).is_file()
    command = COMMAND.get(name, name)
    assert svc["command"] in ([command], command)
    port = HOOKSTREAM[name]
    # Scaled services publish nothing (replicas would clash on a host port).
    assert published(svc) == ({} if name in SCALED else {port: port})
    e = env(svc)
    assert e["HOOKSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert re.fullmatch(r"postgresql\+psycopg://hookstream:.+@postgres:5432/hookstream",
                        e["HOOKSTREAM_DATABASE_URL"])
    assert e["HOOKSTREAM_SMTP_URL"] == "smtp://mailpit:1025"
    assert e["HOOKSTREAM_ADMIN_URL"] == "http://admin:8081"
    assert "HOOKSTREAM_ADMIN_TOKEN" in e
    # Every HOOKSTREAM_* variable is a real setting (a typo would be silently ignored).
    fields = {f"HOOKSTREAM_{f.upper()}" for f in Settings.model_fields}
    assert set(e) - fields == set(), f"{name}: unknown settings {set(e) - fields}"
    # The port the service listens on is the one its healthcheck and ports use.
    port_setting = PORT_SETTING[name]
    assert int(e.get(f"HOOKSTREAM_{port_setting}",
                     Settings.model_fields[port_setting.lower()].default)) == port
    if name in ("admin", "ingress", "survey"):  # their HTTP servers must listen beyond loopback
        assert e[f"HOOKSTREAM_{name.upper()}_HOST"] == "0.0.0.0"
    # Healthy means ready (what depends_on waits for), not merely alive.
    test = svc["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{port}/readyz" in test[3]


def test_survey_links_reach_the_survey_service(services: dict[str, Any]) -> None:
    """The links in invitations point at the survey page's published port, not the admin
    API's (which respondents never reach)."""
    base = INTERPOLATION.fullmatch(env(services["notifier"])["HOOKSTREAM_SURVEY_BASE_URL"])
    assert base and base["op"] == ":-"
    host_port = published(services["survey"])[HOOKSTREAM["survey"]]
    assert base["arg"] == f"http://localhost:{host_port}/s"


def test_host_ports_are_unique(services: dict[str, Any]) -> None:
    hosts = [h for svc in services.values() for h in published(svc).values()]
    assert len(hosts) == len(set(hosts)), hosts


def test_no_committed_admin_token_or_secret(services: dict[str, Any]) -> None:
    secretish = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY", re.I)
    for name, svc in services.items():
        for key, value in env(svc).items():
            if not secretish.search(key):
                continue
            m = INTERPOLATION.fullmatch(value)
            assert m, f"{name}.{key} must come from the environment (${{VAR}}), not the file"
            if "ADMIN_TOKEN" in key:
                # Required, no fallback: compose stops with this message when it is unset.
                assert m["op"] == ":?", f"{name}.{key}: use ${{VAR:?message}}, no default"
    # No value anywhere looks like a generated token (token_urlsafe(32): 43 mixed characters).
    for value in _strings(services):
        for run in re.findall(r"[A-Za-z0-9_\-]{24,}", value):
            mixed = all(re.search(c, run) for c in ("[a-z]", "[A-Z]", "[0-9]"))
            assert not mixed, f"secret-looking literal in docker-compose.yml: {run[:6]}..."


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    else:
        yield str(node)


def test_interpolations_are_well_formed() -> None:
    text = "\n".join(ln for ln in (REPO / "docker-compose.yml").read_text().splitlines()
                     if not ln.lstrip().startswith("#"))
    dollars = [m.start() for m in re.finditer(r"\$(?!\$)", text)]
    matched = {m.start() for m in INTERPOLATION.finditer(text)}
    assert dollars and set(dollars) == matched, "every $ must start a ${VAR...} reference"


def test_dockerfile() -> None:
    lines = [ln.strip() for ln in (REPO / "deploy" / "Dockerfile").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(ln.startswith("RUN pip install") for ln in lines)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the service must not run as root"
    assert [ln for ln in lines if ln.startswith("ENTRYPOINT")] == ['ENTRYPOINT ["hookstream"]']


def test_dockerfile_installs_the_lock_before_the_source() -> None:
    """The locked dependencies get a layer of their own, built from the lock file alone, so a
    code change rebuilds only the small layer that installs the project (without deps)."""
    lines = [ln.strip() for ln in (REPO / "deploy" / "Dockerfile").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    copies = [(i, ln.split()[1:-1]) for i, ln in enumerate(lines) if ln.startswith("COPY ")]
    installs = [(i, ln) for i, ln in enumerate(lines) if ln.startswith("RUN pip install")]
    assert len(installs) == 2, installs
    (lock_at, lock_run), (project_at, project_run) = installs
    assert "--require-hashes" in lock_run and re.search(r"-r \S*requirements\.lock\b", lock_run)
    assert "--no-deps" in project_run and "-r " not in project_run
    before = [src for i, srcs in copies if i < lock_at for src in srcs]
    assert before, "copy the lock file in before installing from it"
    assert set(before) <= {"requirements.lock", "pyproject.toml"}, \
        f"only the lock may be copied before the dependency layer, not {before}"
    source = [i for i, srcs in copies if "." in srcs]
    assert source and lock_at < source[0] < project_at, "source after the lock, before the wheel"
    assert (REPO / "requirements.lock").is_file()


def test_dockerignore_keeps_the_context_small_and_clean() -> None:
    ignored = {ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".git", ".venv", "var"} <= ignored
    # What `pip install` needs must stay in the context.
    assert not {"pyproject.toml", "README.md", "requirements.lock", "schemas", "hookstream"} \
        & ignored


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        code = self.status if self.path == "/readyz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        """Quiet: the test asserts on exit codes, not on the access log."""


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_healthcheck_one_liner_runs_on_plain_python(
        services: dict[str, Any], health_server: http.server.HTTPServer) -> None:
    """The exact command of the ingress healthcheck, pointed at a local server: exit 0 when
    /readyz answers 200, non-zero when it answers 503 (slim images have no curl)."""
    code = services["ingress"]["healthcheck"]["test"][3]
    port = health_server.server_address[1]
    code = code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    run = [sys.executable, "-I", "-c", code]
    assert subprocess.run(run, capture_output=True, timeout=20).returncode == 0
    _Health.status = 503
    try:
        assert subprocess.run(run, capture_output=True, timeout=20).returncode != 0
    finally:
        _Health.status = 200


def test_compose_commands_exist_in_the_cli(services: dict[str, Any]) -> None:
    import typer

    from hookstream.cli import app

    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    for name in HOOKSTREAM:
        command = services[name]["command"]
        command = command[0] if isinstance(command, list) else command.split()[0]
        assert command in commands, f"`hookstream {command}` (service {name}) does not exist"


def test_prometheus_and_grafana_are_provisioned(services: dict[str, Any]) -> None:
    prom, graf = services["prometheus"], services["grafana"]
    assert prom["image"].startswith("prom/prometheus:")
    assert graf["image"].startswith("grafana/grafana:")
    mounts = [v.split(":")[0] for v in prom["volumes"]] + [v.split(":")[0] for v in graf["volumes"]]
    for path in mounts:
        if path.startswith("./"):
            assert (REPO / path).exists(), f"mounted {path} does not exist"
    assert "./deploy/grafana/dashboards" in mounts
    assert "./deploy/prometheus/prometheus.yml" in mounts
    # Worker and notifier must listen beyond loopback for Prometheus to scrape them.
    for name in ("worker", "notifier"):
        assert services[name]["environment"].get("HOOKSTREAM_METRICS_HOST") == "0.0.0.0", name


def _scaled(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services as `docker compose up --scale ...` would run them: `SCALED[name]` replicas
    of each scaled service, named like compose names containers."""
    out: dict[str, dict[str, Any]] = {}
    for name, svc in services.items():
        for i in range(1, SCALED.get(name, 1) + 1):
            out[f"{name}-{i}"] = svc
    return out


def test_scaled_services_pin_nothing_per_replica(services: dict[str, Any]) -> None:
    """What two replicas of a service cannot share: a host port, a container name, a host
    name (the worker's static membership id is its host name), a fixed address, a writable
    volume, an identity given to Kafka (client or transactional id, group instance id)."""
    identity = re.compile(r"CLIENT_ID|TRANSACTIONAL|INSTANCE_ID|GROUP_INSTANCE", re.I)
    for name in SCALED:
        svc = services[name]
        assert "ports" not in svc, f"{name}: a host port clashes as soon as it is scaled"
        for key in ("container_name", "hostname", "mac_address"):
            assert key not in svc, f"{name}: {key} is one per container"
        networks = svc.get("networks")
        for network in (networks.values() if isinstance(networks, dict) else []):
            assert not (network or {}).get("ipv4_address"), f"{name}: a fixed address"
        for volume in svc.get("volumes", []):
            spec = volume if isinstance(volume, str) else volume.get("source", "")
            read_only = (spec.endswith(":ro") if isinstance(volume, str)
                         else volume.get("read_only"))
            assert read_only, f"{name}: replicas would share the writable volume {spec}"
        pinned = sorted(k for k in env(svc) if identity.search(k))
        assert not pinned, f"{name}: per-replica identities pinned: {pinned}"
    # The containers `--scale` makes: no host port published twice.
    hosts = [h for svc in _scaled(services).values() for h in published(svc).values()]
    assert len(hosts) == len(set(hosts)), hosts


def test_notifiers_share_postgresql(services: dict[str, Any]) -> None:
    """Two notifiers split the due invitations through the database: a SQLite file would be
    one per container, and every replica would mail every invitation."""
    url = env(services["notifier"])["HOOKSTREAM_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "@postgres:" in url
    assert "postgres" in services["notifier"]["depends_on"]


def test_ingress_replicas_share_their_keys_and_rates(services: dict[str, Any]) -> None:
    """A retry on another replica is answered like the first (one Idempotency-Key store) and
    an automation's rate holds for all replicas together (one rate store): both PostgreSQL."""
    ingress = env(services["ingress"])
    for name in ("HOOKSTREAM_IDEMPOTENCY_URL", "HOOKSTREAM_INGRESS_RATE_STORE_URL"):
        assert ingress[name].startswith("postgresql+psycopg://") and "@postgres:" in ingress[name]
    assert "postgres" in services["ingress"]["depends_on"]


def _haproxy() -> dict[str, list[list[str]]]:
    """deploy/haproxy/haproxy.cfg as section header -> its lines (split in words)."""
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] = []
    for raw in (REPO / "deploy/haproxy/haproxy.cfg").read_text().splitlines():
        line = raw.split(" #")[0].strip() if not raw.strip().startswith("#") else ""
        if not line:
            continue
        if not raw[0].isspace():
            current = sections.setdefault(line, [])
        else:
            current.append(line.split())
    return sections


def test_a_load_balancer_fronts_the_ingress_replicas(services: dict[str, Any]) -> None:
    lb = services["lb"]
    assert lb["image"].split(":")[0] == "haproxy", "an official HAProxy image"
    port = HOOKSTREAM["ingress"]
    assert published(lb) == {port: port}, "clients keep reaching the ingress on its port"
    assert lb["depends_on"] == {"ingress": {"condition": "service_healthy"}}
    mounts = {v.split(":")[0]: v.split(":")[1] for v in lb["volumes"]}
    assert mounts == {"./deploy/haproxy/haproxy.cfg": "/usr/local/etc/haproxy/haproxy.cfg"}

    cfg = _haproxy()
    frontends = [lines for head, lines in cfg.items() if head.startswith("frontend")]
    binds = {words[1] for lines in frontends for words in lines if words[0] == "bind"}
    assert f":{port}" in binds
    monitor = [lines for lines in frontends if ["monitor-uri", "/healthz"] in lines]
    assert monitor, "the LB's own liveness for its healthcheck"
    (monitor_bind,) = [w[1] for w in monitor[0] if w[0] == "bind"]
    assert f"127.0.0.1{monitor_bind}/healthz" in " ".join(lb["healthcheck"]["test"])

    (backend,) = [lines for head, lines in cfg.items() if head == "backend ingress"]
    templates = [w for w in backend if w[0] == "server-template"]
    assert len(templates) == 1
    _, _, slots, target = templates[0][:4]
    assert target == f"ingress:{port}", "the compose service name: Docker's DNS lists replicas"
    assert int(slots) >= SCALED["ingress"]
    assert ["option", "httpchk", "GET", "/readyz"] in backend, "traffic only to ready replicas"
    default_server = next(w for w in backend if w[0] == "default-server")
    assert "check" in default_server
    resolvers = default_server[default_server.index("resolvers") + 1]
    assert ["nameserver", "dns", "127.0.0.11:53"] in cfg[f"resolvers {resolvers}"]
    # Never replay a webhook a replica may have published: retry only unsent requests.
    retry_on = [w for lines in cfg.values() for w in lines if w[0] == "retry-on"]
    assert retry_on == [["retry-on", "conn-failure"]]


def test_prometheus_finds_every_replica(services: dict[str, Any]) -> None:
    """Each hookstream service is scraped through Docker's DNS (one target per replica), on the
    port the service listens on."""
    conf = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in conf["scrape_configs"]}
    for name, port in HOOKSTREAM.items():
        job = jobs[name]
        assert "static_configs" not in job, f"{name}: a static target is one replica"
        (sd,) = job["dns_sd_configs"]
        assert sd["names"] == [name] and sd.get("type", "SRV") == "A" and sd["port"] == port
        assert name in services
    assert "prometheus" in services and services["prometheus"]["depends_on"]["worker"]
