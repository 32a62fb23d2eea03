"""A local single-node Apache Kafka (KRaft) broker, run from Maven Central jars.

No Docker needed: Maven resolves the broker pinned in `pom.xml` into ~/.m2, storage is
formatted once under the data directory, and the broker runs as a child JVM whose pid is
recorded so that `stop` ends exactly that process.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

POM = Path(__file__).with_name("pom.xml")
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hookstream"


class KafkaLaunchError(RuntimeError):
    """The local broker could not be fetched, started or stopped."""


def kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise KafkaLaunchError(f"{POM} does not pin kafka.version")
    return node.text


def classpath() -> str:
    """The broker's classpath; Maven fetches the jars the first time (cached in ~/.m2)."""
    version = kafka_version()
    cp_file = CACHE_DIR / f"kafka-{version}.classpath"
    if cp_file.exists() and all(Path(p).exists() for p in cp_file.read_text().split(":")):
        return cp_file.read_text()
    if shutil.which("mvn") is None:
        raise KafkaLaunchError("Maven (mvn) is needed to fetch Apache Kafka; install it, or "
                               "point HOOKSTREAM_KAFKA_BOOTSTRAP at a running cluster")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cp_file.with_suffix(".tmp")
    proc = subprocess.run(
        ["mvn", "-B", "-q", "-f", str(POM), "dependency:build-classpath",
         f"-Dmdep.outputFile={tmp}", "-Dmdep.includeScope=runtime"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0 or not tmp.exists():
        raise KafkaLaunchError(f"Maven could not fetch Kafka {version}:\n{proc.stdout[-3000:]}"
                               f"{proc.stderr[-3000:]}")
    tmp.replace(cp_file)
    return cp_file.read_text()


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state != "Z"


def is_kafka_process(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline


async def answers_metadata(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when the broker answers a metadata request (not merely accepts TCP)."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    # While we poll a starting broker, refused connections are expected, not errors to print.
    conn_log = logging.getLogger("aiokafka")
    level = conn_log.level
    conn_log.setLevel(logging.CRITICAL)
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()
        conn_log.setLevel(level)


def _answers_metadata_blocking(bootstrap: str, timeout: float) -> bool:
    """`answers_metadata` from blocking code, also when the caller runs an event loop
    (a benchmark's async main): the probe gets a loop of its own on a short-lived thread."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-probe") as pool:
        return pool.submit(asyncio.run, answers_metadata(bootstrap, timeout)).result()


@dataclass
class BrokerState:
    pid: int
    port: int
    controller_port: int
    version: str
    data_dir: str
    started_at: float

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = FILE
"""


def new_cluster_id() -> str:
    """A random cluster id as Kafka writes them. Like Kafka's Uuid.randomUuid(), never one
    starting with '-': the storage tool's argument parser would take it for an option
    (this failed about one broker start in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalKafka:
    """One broker in one data directory; `state.json` there records what runs."""

    def __init__(self, data_dir: Path, port: int = 9092, controller_port: int = 9093,
                 heap: str = "768m", log_level: str = "INFO") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.log_level = log_level

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _state_file(self) -> Path:
        return self.data_dir / "state.json"

    def state(self) -> BrokerState | None:
        """The recorded broker, if its process is still alive."""
        try:
            raw = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return None
        st = BrokerState(**raw)
        if pid_alive(st.pid) and is_kafka_process(st.pid):
            return st
        return None

    def _write_config(self) -> Path:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.data_dir / 'kraft'}",
            "num.partitions=3",
            # A single node: every replicated internal topic must ask for one replica, or
            # consumer groups and transactions wait forever for replicas that never come.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=10",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "min.insync.replicas=1",
            "default.replication.factor=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            # Threads sized for a small machine (Kafka's defaults, 3 network and 8 I/O
            # threads, are for a server with disks to wait on): on 2 cores fewer threads
            # mean fewer hand-offs per produce request (bench/ingress.py).
            f"num.network.threads={max(1, CPUS // 2)}",
            f"num.io.threads={max(2, CPUS)}",
            "",
        ]))
        (self.data_dir / "log4j2.properties").write_text(
            LOG4J2.format(log=logs / "server.log", level=self.log_level))
        return props

    def _java(self, cp: str, main: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise KafkaLaunchError("Java 17+ is needed to run the local Kafka broker")
        return [java, f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.data_dir / 'logs'}", "-cp", cp, main, *args]

    def _format(self, cp: str, props: Path) -> None:
        if (self.data_dir / "kraft" / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        proc = subprocess.run(
            self._java(cp, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                       "-c", str(props), "--ignore-formatted"),
            capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise KafkaLaunchError(f"formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}")

    def start(self, timeout: float = 90.0) -> BrokerState:
        """Start the broker (or find it running) and wait until it answers metadata."""
        running = self.state()
        if running is not None:
            return running
        for p in (self.port, self.controller_port):
            if not port_free(p):
                raise KafkaLaunchError(
                    f"port {p} on 127.0.0.1 is taken by another process; free it or choose "
                    "another port (--port / HOOKSTREAM_KAFKA_PORT)")
        cp = classpath()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        self._format(cp, props)
        out = open(self.data_dir / "logs" / "stdout.log", "ab")  # noqa: SIM115 - owned by the JVM
        proc = subprocess.Popen(self._java(cp, "kafka.Kafka", str(props)), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        out.close()
        st = BrokerState(pid=proc.pid, port=self.port, controller_port=self.controller_port,
                         version=kafka_version(), data_dir=str(self.data_dir),
                         started_at=time.time())
        self._state_file.write_text(json.dumps(st.__dict__))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise KafkaLaunchError(
                    f"the broker exited with status {proc.returncode}; see "
                    f"{self.data_dir / 'logs'}:\n{self._log_tail()}")
            if _answers_metadata_blocking(self.bootstrap, timeout=2.0):
                return st
            time.sleep(0.3)
        self.stop()
        raise KafkaLaunchError(f"the broker did not answer within {timeout:.0f}s:\n"
                               f"{self._log_tail()}")

    def _log_tail(self, n: int = 30) -> str:
        lines: list[str] = []
        for name in ("stdout.log", "server.log"):
            path = self.data_dir / "logs" / name
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(lines)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the recorded broker: SIGTERM (controlled shutdown), SIGKILL if it hangs.

        Returns whether a broker was running.
        """
        try:
            raw = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return False
        pid = int(raw["pid"])
        was_running = pid_alive(pid) and is_kafka_process(pid)
        if was_running:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.1)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                while pid_alive(pid):
                    _reap(pid)
                    time.sleep(0.05)
        _reap(pid)
        self._state_file.unlink(missing_ok=True)
        return was_running


def _reap(pid: int) -> None:
    """Collect the exit status when the broker is our own child (no zombie left behind)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return  # not our child: its own parent (or init) reaps it


@contextlib.contextmanager
def scratch_broker(data_dir: Path | None = None, log_level: str = "WARN") -> Iterator[str]:
    """A broker of our own on free ports (in `data_dir` or a temporary one), stopped at the
    end; yields its bootstrap address. For tests and benchmarks."""
    with contextlib.ExitStack() as cleanup:
        if data_dir is None:
            data_dir = Path(cleanup.enter_context(
                tempfile.TemporaryDirectory(prefix="hookstream-kafka-")))
        kafka = LocalKafka(data_dir, port=free_port(), controller_port=free_port(), heap="1g",
                           log_level=log_level)
        kafka.start()
        cleanup.callback(kafka.stop)
        yield kafka.bootstrap


@contextlib.contextmanager
def named_or_scratch_broker() -> Iterator[str]:
    """The cluster HOOKSTREAM_KAFKA_BOOTSTRAP names, else a scratch broker of our own."""
    named = os.environ.get("HOOKSTREAM_KAFKA_BOOTSTRAP")
    if named:
        yield named
        return
    with scratch_broker() as bootstrap:
        yield bootstrap
