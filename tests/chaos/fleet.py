"""The fleet the fault-injection suite runs: every part a real process, stopped by pid.

Two ingress replicas behind a round-robin load balancer (tests/support/balancer.py), streams
workers, two notifiers sharing one PostgreSQL, the admin API, an SMTP server (the aiosmtpd
sink, `hookstream smtp-sink`, a process of its own that a fault stops and starts), on the
session's three-broker SASL_SSL cluster (RF 3, min ISR 2). PostgreSQL is a server of the
fleet's own (a fault restarts it; the session's is shared).

Every replica has its own var directory, as separate hosts would: nothing is shared on disk.

THE ONE PLACE for what the fleet shares beyond Kafka and PostgreSQL: `SHARED_IDEMPOTENCY`.
On (the default): the ingress replicas share their Idempotency-Key store on the fleet's
PostgreSQL (`HOOKSTREAM_IDEMPOTENCY_URL`), so a client retry that the balancer sends to the
other replica is answered like the first, and any cross-replica duplicate fails the round.
Off (HOOKSTREAM_CHAOS_SHARED_IDEMPOTENCY=0: each replica its own SQLite file, as a deployment
that forgot the setting): such a retry is published again under a new event id and mailed
twice; the suite then counts those as `cross_replica` duplicates, allowed only for respondents
whose request the client sent more than once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from control_plane.demo import seed_demo
from hookstream.local.kafka import LocalKafkaCluster, free_port
from tests.support import postgres
from tests.support.processes import stop

SHARED_IDEMPOTENCY = os.environ.get("HOOKSTREAM_CHAOS_SHARED_IDEMPOTENCY", "1") != "0"
IDEMPOTENCY_SETTING = "HOOKSTREAM_IDEMPOTENCY_URL"
ADMIN_TOKEN = "chaos-admin-token"
PARTITIONS = 6  # room for three workers and two notifiers


@dataclass
class Service:
    """One process of the fleet: how to (re)start it, its log, its readiness URL."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    ready_url: str | None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        with open(self.log, "ab") as out:
            # A session of its own: a fault kills its process group (the ingress's HTTP
            # server runs its worker as a child), as stopping a container would.
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self, timeout: float = 180.0) -> None:
        if self.ready_url is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n"
                                   f"{tail(self.log)}")
            try:
                if httpx.get(self.ready_url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet: poll again
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready at {self.ready_url} in {timeout:.0f}s:\n"
                           f"{tail(self.log)}")

    def kill(self) -> int:
        """SIGKILL its process group (the group id is its pid) and reap it. Returns the pid."""
        assert self.proc is not None
        pid = self.proc.pid
        os.killpg(pid, signal.SIGKILL)
        self.proc.wait()
        return pid

    def stop(self) -> None:
        """SIGTERM (a graceful stop), SIGKILL after 20 s; then anything left in its process
        group (a child the main process did not take down) is SIGKILLed."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            stop(self.proc, signal.SIGTERM, timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as exc:
        return f"(no log: {exc})"


@dataclass
class Fleet:
    cluster: LocalKafkaCluster
    base: Path
    prefix: str
    workers: int = 2
    services: dict[str, Service] = field(default_factory=dict)
    pg: postgres.LocalPostgres | None = None
    pg_port: int = 0
    url: str = ""  # the webhook URL, through the balancer
    api_key: str = ""
    mail_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.mail_dir = self.base / "mail"
        self.logs = self.base / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    # -- the parts --------------------------------------------------------------------------

    def _common_env(self, db_url: str, smtp_port: int, admin_port: int) -> dict[str, str]:
        return {
            **os.environ,
            **self.cluster.client.env(),
            "HOOKSTREAM_KAFKA_REPLICATION_FACTOR": "3",
            "HOOKSTREAM_KAFKA_MIN_INSYNC_REPLICAS": "2",
            "HOOKSTREAM_TOPIC_PREFIX": self.prefix,
            "HOOKSTREAM_TOPIC_PARTITIONS": str(PARTITIONS),
            "HOOKSTREAM_DATABASE_URL": db_url,
            "HOOKSTREAM_ADMIN_TOKEN": ADMIN_TOKEN,
            "HOOKSTREAM_ADMIN_URL": f"http://127.0.0.1:{admin_port}",
            "HOOKSTREAM_ADMIN_PORT": str(admin_port),
            "HOOKSTREAM_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "HOOKSTREAM_LOG_LEVEL": "WARNING",
        }

    def _add(self, name: str, args: list[str], env: dict[str, str],
             ready_url: str | None) -> Service:
        var = self.base / "var" / name  # a host of its own
        var.mkdir(parents=True, exist_ok=True)
        svc = Service(name, args, {**env, "HOOKSTREAM_VAR_DIR": str(var)},
                      self.logs / f"{name}.log", ready_url)
        self.services[name] = svc
        return svc

    def start(self) -> None:
        t0 = time.monotonic()
        self.pg_port = free_port()
        self.pg = postgres.start(self.base / "pg", self.pg_port)
        smtp_port, admin_port = free_port(), free_port()
        env = self._common_env(self.pg.url, smtp_port, admin_port)
        cli = [sys.executable, "-m", "hookstream.cli"]
        topics = subprocess.run([*cli, "topics", "apply"], env=env, capture_output=True,
                                text=True, check=False)
        assert topics.returncode == 0, topics.stdout + topics.stderr
        self._add("smtp", [*cli, "smtp-sink", "--dir", str(self.mail_dir), "--port",
                           str(smtp_port)], env, None)
        self._add("admin", [*cli, "admin"], env, f"http://127.0.0.1:{admin_port}/readyz")
        ingress_ports = []
        for i in (1, 2):
            port = free_port()
            ingress_ports.append(port)
            ienv = {**env, "HOOKSTREAM_INGRESS_PORT": str(port)}
            if SHARED_IDEMPOTENCY:
                ienv[IDEMPOTENCY_SETTING] = self.pg.url
            self._add(f"ingress-{i}", [*cli, "ingress"], ienv,
                      f"http://127.0.0.1:{port}/readyz")
        for i in range(1, self.workers + 1):
            port = free_port()
            self._add(f"worker-{i}", [*cli, "worker", "--loglevel", "warn"],
                      {**env, "HOOKSTREAM_WORKER_PORT": str(port)},
                      f"http://127.0.0.1:{port}/readyz")
        for i in (1, 2):
            port = free_port()
            self._add(f"notifier-{i}", [*cli, "notifier", "--log-level", "warning"],
                      {**env, "HOOKSTREAM_NOTIFIER_PORT": str(port)},
                      f"http://127.0.0.1:{port}/readyz")
        lb_port = free_port()
        self._add("balancer", [sys.executable, "-m", "tests.support.balancer", str(lb_port),
                               *(f"127.0.0.1:{p}" for p in ingress_ports)], env, None)
        # All at once: the services read automations from the config topic, so none waits
        # for the demo automation; on two shared cores starting them side by side is faster.
        for svc in self.services.values():
            svc.start()
        self.services["admin"].wait_ready()
        automation_id, self.api_key = seed_demo(f"http://127.0.0.1:{admin_port}", ADMIN_TOKEN)
        self.url = f"http://127.0.0.1:{lb_port}/v1/hooks/{automation_id}"
        for svc in self.services.values():
            svc.wait_ready()
        self.started_in = time.monotonic() - t0

    def warm_up(self, n: int = 10, timeout: float = 240.0) -> float:
        """`n` webhooks through the balancer, until each is mailed: every part has done its
        first work (connections, caches, partitions assigned) before a round measures delays.
        Returns the seconds it took."""
        t0 = time.monotonic()
        for i in range(n):
            r = httpx.post(self.url, timeout=30, json={"email": f"warm-{i}@example.com",
                                                       "first_name": "Warm"},
                           headers={"X-API-Key": self.api_key,
                                    "Idempotency-Key": f"warm-{i}"})
            assert r.status_code == 202, r.text
        while len(list(self.mail_dir.glob("*.eml"))) < n:
            assert time.monotonic() - t0 < timeout, "the warm-up webhooks were not mailed:\n" \
                + "\n".join(f"--- {n}:\n{tail(s.log, 15)}" for n, s in self.services.items())
            time.sleep(0.5)
        return time.monotonic() - t0

    def stop(self) -> None:
        # SIGTERM to every part first, then wait for each: the graceful stops overlap.
        for svc in self.services.values():
            if svc.proc is not None and svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGTERM)
        for svc in reversed(list(self.services.values())):
            svc.stop()
        if self.pg is not None:
            postgres.stop(self.pg.data_dir)

    # -- faults -----------------------------------------------------------------------------

    def restart_postgres(self) -> None:
        """Fast shutdown, then start again on the same port and data (a restart)."""
        assert self.pg is not None
        postgres.stop(self.pg.data_dir)
        self.pg = postgres.start(self.base / "pg", self.pg_port)

    def of(self, kind: str) -> list[Service]:
        return [s for n, s in self.services.items() if n.startswith(f"{kind}-")]


def fleet_of(cluster: LocalKafkaCluster, prefix: str, workers: int = 2) -> Iterator[Fleet]:
    """Start a fleet, yield it, stop every part by pid (a generator for a fixture)."""
    # Not under pytest's tmp dir: that is private to root and PostgreSQL runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="hookstream-chaos-"))
    base.chmod(0o755)
    fleet = Fleet(cluster, base, prefix, workers)
    try:
        fleet.start()
        warm = fleet.warm_up()
        print(f"\nfleet started in {fleet.started_in:.1f}s, first mails {warm:.1f}s later")
        yield fleet
    finally:
        fleet.stop()
        if os.environ.get("HOOKSTREAM_CHAOS_KEEP") == "1":
            print(f"chaos logs and mails kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
