"""Wrong Kafka credentials or an untrusted certificate: each service says which at start-up,
in one line, and its readiness stays false (issue 12, item 4).

Each service runs as its own process (its real entry point) against the session's SASL_SSL
cluster; what it writes is read from its output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hookstream.local.kafka import LocalKafkaCluster, free_port
from tests.support.processes import stop

# service command -> the setting naming its probe port
SERVICES = {"ingress": "HOOKSTREAM_INGRESS_PORT", "worker": "HOOKSTREAM_WORKER_PORT",
            "notifier": "HOOKSTREAM_NOTIFIER_PORT"}
WAIT_S = 60.0


def _run_until_said(service: str, env: dict[str, str], cwd: Path, expect: str
                    ) -> tuple[list[str], httpx.Response | None]:
    """Start `hookstream <service>`, wait for a line containing `expect`, read /readyz, stop
    it by pid. Returns the output lines mentioning Kafka and the last /readyz answer."""
    port = free_port()
    env = {**env, SERVICES[service]: str(port)}
    log = cwd / f"{service}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hookstream.cli", service], cwd=cwd,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    ready: httpx.Response | None = None
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")
            said = expect in log.read_text(errors="replace")
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            except httpx.TransportError:
                ready = None
            if said and ready is not None:
                break
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.5)
        time.sleep(3)  # long enough for a retry loop to repeat itself, if it would
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    finally:
        stop(proc)
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if "cannot connect to Kafka" in line]
    return lines, ready


def _base_env(cluster: LocalKafkaCluster, tmp_path: Path, topic_prefix: str) -> dict[str, str]:
    return {**os.environ, **cluster.client.env(),
            "HOOKSTREAM_TOPIC_PREFIX": topic_prefix,
            "HOOKSTREAM_DATABASE_URL": f"sqlite:///{tmp_path}/hookstream.db",
            "HOOKSTREAM_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_wrong_password_one_line_and_not_ready(service: str, kafka_cluster_sasl: LocalKafkaCluster,
                                               tmp_path: Path, topic_prefix: str) -> None:
    env = _base_env(kafka_cluster_sasl, tmp_path, topic_prefix)
    secret = "not-the-password-" + service
    env["HOOKSTREAM_KAFKA_SASL_PASSWORD"] = secret
    lines, ready = _run_until_said(service, env, tmp_path, "SASL authentication failed")
    assert len(lines) == 1, lines
    assert "Kafka refused the credentials as 'hookstream'" in lines[0], lines
    assert secret not in (tmp_path / f"{service}.log").read_text(errors="replace")
    assert ready is not None and ready.status_code == 503, ready
    body = ready.json()
    assert body["checks"]["kafka"] is False
    assert "SASL authentication failed" in body["reasons"]["kafka"]


def test_untrusted_certificate_one_line_and_not_ready(kafka_cluster_sasl: LocalKafkaCluster,
                                                      tmp_path: Path, topic_prefix: str) -> None:
    env = _base_env(kafka_cluster_sasl, tmp_path, topic_prefix)
    del env["HOOKSTREAM_KAFKA_SSL_CAFILE"]  # the system's CAs never signed the launcher's
    lines, ready = _run_until_said("ingress", env, tmp_path, "not trusted")
    assert len(lines) == 1, lines
    assert "certificate is not trusted" in lines[0], lines
    assert ready is not None and ready.status_code == 503
    assert "not trusted" in ready.json()["reasons"]["kafka"]
