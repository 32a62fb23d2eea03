"""Process helpers for tests that run hookstream's commands as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from hookstream.local.kafka import free_port


def children(pid: int) -> set[int]:
    """The pids whose parent is `pid` (read from /proc)."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Stop `proc` by its pid: `sig`, then SIGKILL if it has not ended within `timeout`.
    Returns its exit code."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def stack_env(prefix: str, admin_token: str, **kafka: str) -> tuple[dict[str, str], dict[str, int]]:
    """The environment for `hookstream up` on free ports (and those ports, by service):
    topics under `prefix`, the SMTP sink on its own port, `kafka` the HOOKSTREAM_KAFKA_*
    variables."""
    ports = {name: free_port() for name in ("ingress", "admin", "worker", "notifier", "survey",
                                            "smtp")}
    env = {
        **os.environ,
        **kafka,
        "HOOKSTREAM_TOPIC_PREFIX": prefix,
        "HOOKSTREAM_INGRESS_PORT": str(ports["ingress"]),
        "HOOKSTREAM_ADMIN_PORT": str(ports["admin"]),
        "HOOKSTREAM_ADMIN_URL": f"http://127.0.0.1:{ports['admin']}",
        "HOOKSTREAM_SURVEY_PORT": str(ports["survey"]),
        "HOOKSTREAM_SURVEY_BASE_URL": f"http://127.0.0.1:{ports['survey']}/s",
        "HOOKSTREAM_WORKER_PORT": str(ports["worker"]),
        "HOOKSTREAM_NOTIFIER_PORT": str(ports["notifier"]),
        "HOOKSTREAM_SMTP_URL": f"smtp://127.0.0.1:{ports['smtp']}",
        "HOOKSTREAM_ADMIN_TOKEN": admin_token,
    }
    return env, ports
