"""Shared by bench/streams.py and bench/scheduler.py: a broker, the worker subprocess, RSS."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.kafka.clients import KafkaConnection  # noqa: E402
from core.settings import get_settings  # noqa: E402
from hookstream.local.kafka import free_port  # noqa: E402
from hookstream.local.kafka import named_or_scratch_broker as broker  # noqa: E402,F401


def kafka(bootstrap: str) -> KafkaConnection:
    """The bench's broker with the HOOKSTREAM_KAFKA_* security settings of this environment
    (a secured cluster named by HOOKSTREAM_KAFKA_BOOTSTRAP, say)."""
    return KafkaConnection.from_settings(get_settings()).with_bootstrap(bootstrap)


def replication() -> dict[str, int]:
    """The topics' replication from HOOKSTREAM_KAFKA_REPLICATION_FACTOR and
    HOOKSTREAM_KAFKA_MIN_INSYNC_REPLICAS (3 and 2 on a three-broker cluster; 1 by default)."""
    s = get_settings()
    return {"replication_factor": s.kafka_replication_factor,
            "min_insync_replicas": s.kafka_min_insync_replicas}


class WorkerProcess:
    """A process (default `python -m streams`) with its own prefix, var dir and port."""

    def __init__(self, bootstrap: str, prefix: str, var_dir: Path, day_seconds: float = 86400.0,
                 command: tuple[str, ...] = ("-m", "streams"), name: str = "worker") -> None:
        self.port = free_port()
        self.env = dict(os.environ, HOOKSTREAM_KAFKA_BOOTSTRAP=bootstrap,
                        HOOKSTREAM_TOPIC_PREFIX=prefix, HOOKSTREAM_VAR_DIR=str(var_dir),
                        HOOKSTREAM_WORKER_PORT=str(self.port),
                        HOOKSTREAM_DAY_SECONDS=str(day_seconds))
        self.command = command
        self.module = name
        self.log_path = var_dir / f"{name}.log"
        var_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.command, *args], cwd=ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT)

    async def wait_ready(self, timeout: float = 90.0) -> None:
        """Until the worker's /readyz answers 200 (config loaded, both loops assigned)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.module} exited; see {self.log_path}")
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/readyz")).status_code \
                            == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.module} not ready after {timeout}s; see {self.log_path}")

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient(timeout=5.0) as client:
            text = (await client.get(f"http://127.0.0.1:{self.port}/metrics")).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def rss_kib(self, field: str = "VmHWM") -> int:
        """Peak (VmHWM) or current (VmRSS) resident memory of the process, KiB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
