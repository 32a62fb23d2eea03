"""`make run` as a newcomer uses it: `hookstream up`, then the printed curl line, gives a mail.

The stack runs as real processes (admin API, ingress, worker, notifier, survey page, SMTP
sink) against the session's real broker; Ctrl-C (SIGINT) must stop every child it started.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from hookstream.local.kafka import pid_alive
from tests.support.processes import children, stack_env


def _scrape(port: int) -> dict[str, float]:
    """Sum of every sample per sample name on a service's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def test_up_then_curl_line_gives_an_eml(kafka_bootstrap: str, topic_prefix: str,
                                        tmp_path: Path) -> None:
    env, ports = stack_env(topic_prefix, "e2e-admin-token",
                           HOOKSTREAM_KAFKA_BOOTSTRAP=kafka_bootstrap)
    up = subprocess.Popen([sys.executable, "-m", "hookstream.cli", "up"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")),
                              daemon=True)  # type: ignore[union-attr]
    reader.start()
    kids: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        while not any(line.startswith("curl ") for line in lines):
            assert up.poll() is None, "hookstream up exited:\n" + "".join(lines)
            assert time.monotonic() < deadline, "no curl line printed:\n" + "".join(lines)
            time.sleep(0.2)
        kids = children(up.pid)
        assert len(kids) >= 6, kids  # sink, admin, ingress, worker, notifier, survey
        curl = next(line for line in lines if line.startswith("curl "))
        assert "hookstream is running." in "".join(lines)

        services = {"ingress": ports["ingress"], "worker": ports["worker"],
                    "notifier": ports["notifier"]}
        before = {name: _scrape(port) for name, port in services.items()}
        sent = time.monotonic()
        res = subprocess.run([*shlex.split(curl), "-w", "\n%{http_code}"], capture_output=True,
                             text=True, timeout=30)
        body, status = res.stdout.rsplit("\n", 1)
        assert status == "202", res.stdout + res.stderr
        assert orjson.loads(body)["accepted"] == 1

        mail_dir = tmp_path / "var" / "mail"
        while not list(mail_dir.glob("*.eml")):
            assert time.monotonic() - sent < 30, "no .eml within 30 s:\n" + "".join(lines)
            time.sleep(0.2)
        took = time.monotonic() - sent
        eml = next(mail_dir.glob("*.eml"))
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert msg["To"] == "ada@example.com"
        text = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert "Ada" in text
        link = re.search(rf"http://127\.0\.0\.1:{ports['survey']}/s/[A-Za-z0-9_-]+", text)
        assert link, text
        page = httpx.get(link.group(0), timeout=10)
        assert page.status_code == 200 and "ada@example.com" in page.text
        # The admin API serves no survey page: respondents never reach it.
        path = link.group(0).split(str(ports["survey"]), 1)[1]
        assert httpx.get(f"http://127.0.0.1:{ports['admin']}{path}", timeout=10).status_code \
            == 404
        print(f"webhook to .eml in {took:.2f}s")

        # Each service's counters moved with the record as it flowed through.
        moving = {"ingress": "hookstream_webhooks_accepted_total",
                  "worker": "hookstream_invitations_emitted_total",
                  "notifier": "hookstream_invitations_sent_total"}
        deadline = time.monotonic() + 20
        while True:
            after = {name: _scrape(port) for name, port in services.items()}
            moved = {name: after[name].get(metric, 0) - before[name].get(metric, 0)
                     for name, metric in moving.items()}
            lag_seen = any(k.startswith("hookstream_consumer_lag") for k in after["worker"])
            if all(v >= 1 for v in moved.values()) and lag_seen:
                break
            assert time.monotonic() < deadline, (moved, lag_seen)
            time.sleep(0.5)
        assert moved == {"ingress": 1, "worker": 1, "notifier": 1}
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            up.wait(90)
        except subprocess.TimeoutExpired:
            up.kill()
            for pid in kids:
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            raise
    assert up.returncode == 0, "".join(lines)
    assert "stopped." in "".join(lines)
    assert not [pid for pid in kids if pid_alive(pid)], "children left running"
