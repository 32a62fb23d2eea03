"""A local Apache Kafka (KRaft) broker, or a cluster of them, run from Maven Central jars.

No Docker needed: Maven resolves the broker pinned in `pom.xml` into ~/.m2, storage is
formatted once under the data directory, and each broker runs as a child JVM whose pid is
recorded so that `stop` ends exactly that process.

`LocalKafka` is one node (the single-node default); `LocalKafkaCluster` runs several combined
broker+controller nodes, optionally with a SASL_SSL (SCRAM) client listener, certificates
and users made by the launcher, and per-node kill/restart/pause for fault tests.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POM = Path(__file__).with_name("pom.xml")
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
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
    # Keyed by the pom's content too: a changed dependency must not reuse an old classpath.
    pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    cp_file = CACHE_DIR / f"kafka-{version}-{pom_hash}.classpath"
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


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (held open together while chosen, so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                 for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


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


async def answers_metadata(bootstrap: str, timeout: float = 3.0,
                           client: KafkaClientSettings | None = None) -> bool:
    """True when the broker answers a metadata request (not merely accepts TCP)."""
    return await live_brokers(bootstrap, timeout, client) > 0


async def live_brokers(bootstrap: str, timeout: float = 3.0,
                       client: KafkaClientSettings | None = None) -> int:
    """How many brokers the cluster's metadata lists (0 when nothing answers). With `client`,
    its security settings are used (its own bootstrap list is ignored)."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    extra = client.aiokafka_kwargs() if client else {}
    extra.pop("bootstrap_servers", None)
    kafka = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000),
                           **extra)
    # While we poll a starting broker, refused connections are expected, not errors to print.
    conn_log = logging.getLogger("aiokafka")
    level = conn_log.level
    conn_log.setLevel(logging.CRITICAL)
    try:
        await asyncio.wait_for(kafka.bootstrap(), timeout)
        return max(1, len(kafka.cluster.brokers()))
    except (KafkaError, OSError, TimeoutError):
        return 0
    finally:
        await kafka.close()
        conn_log.setLevel(level)


def _answers_metadata_blocking(bootstrap: str, timeout: float) -> bool:
    """`answers_metadata` from blocking code, also when the caller runs an event loop
    (a benchmark's async main): the probe gets a loop of its own on a short-lived thread."""
    return _live_brokers_blocking(bootstrap, timeout) > 0


def _live_brokers_blocking(bootstrap: str, timeout: float,
                           client: KafkaClientSettings | None = None) -> int:
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-probe") as pool:
        return pool.submit(asyncio.run, live_brokers(bootstrap, timeout, client)).result()


@dataclass
class BrokerState:
    pid: int
    port: int
    controller_port: int
    version: str
    data_dir: str
    started_at: float
    node_id: int = 1

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


@dataclass(frozen=True)
class ClusterRole:
    """What a node of a `LocalKafkaCluster` needs beyond a single node's settings."""

    node_id: int
    voters: str  # controller.quorum.voters: "1@127.0.0.1:p1,2@127.0.0.1:p2,..."
    cluster_id: str
    replicas: int  # replication factor of internal topics and new topics
    # SASL_SSL only: the PLAINTEXT loopback listener the brokers replicate through, the
    # PKCS12 keystore of the client listener and its password, and the SCRAM credentials
    # the storage tool writes into the metadata log at format time.
    internal_port: int | None = None
    keystore: str | None = None
    keystore_password: str | None = field(default=None, repr=False)
    scram: tuple[str, ...] = field(default=(), repr=False)


class LocalKafka:
    """One broker in one data directory; `state.json` there records what runs."""

    def __init__(self, data_dir: Path, port: int = 9092, controller_port: int = 9093,
                 heap: str = "768m", log_level: str = "INFO",
                 role: ClusterRole | None = None, quick_jvm: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.quick_jvm = quick_jvm
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.log_level = log_level
        self.role = role

    @property
    def node_id(self) -> int:
        return self.role.node_id if self.role else 1

    @property
    def _probe_bootstrap(self) -> str:
        """A PLAINTEXT listener of this node, to ask whether it answers."""
        if self.role and self.role.internal_port:
            return f"127.0.0.1:{self.role.internal_port}"
        return self.bootstrap

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

    def _listener_lines(self) -> list[str]:
        role = self.role
        if role is None or role.internal_port is None:
            return [
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ]
        # Clients: SASL_SSL with SCRAM. Brokers replicate over PLAINTEXT on the loopback
        # interface: nothing leaves the machine, and TLS on every replica fetch would cost
        # the two cores the brokers share with the services under test.
        scram_module = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return [
            f"listeners=CLIENT://127.0.0.1:{self.port},"
            f"INTERNAL://127.0.0.1:{role.internal_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=CLIENT://127.0.0.1:{self.port},"
            f"INTERNAL://127.0.0.1:{role.internal_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=INTERNAL",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,"
            "CLIENT:SASL_SSL",
            f"listener.name.client.sasl.enabled.mechanisms={','.join(SCRAM_MECHANISMS)}",
            *(f"listener.name.client.{m.lower()}.sasl.jaas.config={scram_module}"
              for m in SCRAM_MECHANISMS),
            "listener.name.client.ssl.keystore.type=PKCS12",
            f"listener.name.client.ssl.keystore.location={role.keystore}",
            f"listener.name.client.ssl.keystore.password={role.keystore_password}",
            f"listener.name.client.ssl.key.password={role.keystore_password}",
        ]

    def _replication_lines(self) -> list[str]:
        if self.role is None or self.role.replicas == 1:
            return [
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
            ]
        rf = self.role.replicas
        isr = max(1, rf - 1)  # RF 3, min ISR 2: one node may be down and acks=all still works
        return [
            f"offsets.topic.replication.factor={rf}",
            "offsets.topic.num.partitions=10",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={isr}",
            "transaction.state.log.num.partitions=10",
            f"share.coordinator.state.topic.replication.factor={rf}",
            f"share.coordinator.state.topic.min.isr={isr}",
            f"min.insync.replicas={isr}",
            f"default.replication.factor={rf}",
            # A killed node is fenced (and dropped from every ISR) after the session timeout;
            # the default 9 s is a long stall for acks=all producers in a fault test.
            "broker.heartbeat.interval.ms=1000",
            "broker.session.timeout.ms=6000",
        ]

    def _write_config(self) -> Path:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        voters = self.role.voters if self.role else f"1@127.0.0.1:{self.controller_port}"
        props.touch(mode=0o600)  # the keystore password may be in it
        props.write_text("\n".join([
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"controller.quorum.voters={voters}",
            *self._listener_lines(),
            f"log.dirs={self.data_dir / 'kraft'}",
            "num.partitions=3",
            *self._replication_lines(),
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

    def _java(self, cp: str, main: str, *args: str, tool: bool = False) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise KafkaLaunchError("Java 17+ is needed to run the local Kafka broker")
        # A short-lived tool (the storage formatter) starts in half the CPU time without the
        # optimising JIT and with the serial collector. So does a broker (`quick_jvm`, for
        # tests: 7 instead of 13 CPU-seconds to ready), at the cost of peak throughput.
        quick = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
        vm = ([f"-Xmx{'256m' if tool else self.heap}", *quick] if tool or self.quick_jvm else
              [f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC"])
        return [java, *vm, "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.data_dir / 'logs'}", "-cp", cp, main, *args]

    def _format(self, cp: str, props: Path) -> None:
        if (self.data_dir / "kraft" / "meta.properties").exists():
            return
        cluster_id = self.role.cluster_id if self.role else new_cluster_id()
        creds = self.role.scram if self.role else ()
        scram = [arg for cred in creds for arg in ("--add-scram", cred)]
        proc = subprocess.run(
            self._java(cp, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                       "-c", str(props), "--ignore-formatted", *scram, tool=True),
            capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise KafkaLaunchError(f"formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}")

    def _ports(self) -> tuple[int, ...]:
        extra = (self.role.internal_port,) if self.role and self.role.internal_port else ()
        return (self.port, self.controller_port, *extra)

    def launch(self) -> subprocess.Popen[bytes]:
        """Format storage if needed and start the broker JVM; does not wait for it.
        The caller must check `state()` first: this starts a second JVM otherwise."""
        for p in self._ports():
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
                         started_at=time.time(), node_id=self.node_id)
        self._state_file.write_text(json.dumps(st.__dict__))
        return proc

    def exited(self, proc: subprocess.Popen[bytes]) -> KafkaLaunchError | None:
        """The error to raise when the launched JVM already exited, else None."""
        if proc.poll() is None:
            return None
        return KafkaLaunchError(f"broker {self.node_id} exited with status {proc.returncode}; "
                                f"see {self.data_dir / 'logs'}:\n{self._log_tail()}")

    def start(self, timeout: float = 90.0) -> BrokerState:
        """Start the broker (or find it running) and wait until it answers metadata."""
        running = self.state()
        if running is not None:
            return running
        proc = self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (err := self.exited(proc)) is not None:
                raise err
            if _answers_metadata_blocking(self._probe_bootstrap, timeout=2.0):
                st = self.state()
                assert st is not None  # launch() recorded it and the JVM runs
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


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of `pid` is stopped (state T or t in /proc), or the process gone."""
    try:
        stats = [p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/stat")]
    except OSError:
        return True  # gone (or going) while we looked
    return all(st.rsplit(")", 1)[-1].split()[0] in ("T", "t") for st in stats)


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


# --- a cluster of nodes, optionally SASL_SSL ------------------------------------------------

SECURITY_CHOICES = ("plaintext", "sasl_ssl")
CLIENT_USER = "hookstream"
ADMIN_USER = "admin"  # the launcher's own probes; clients get CLIENT_USER


@dataclass(frozen=True)
class KafkaClientSettings:
    """Everything a client needs to reach a local cluster, named like the
    HOOKSTREAM_KAFKA_* settings that carry it into the services."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None

    def env(self) -> dict[str, str]:
        """The HOOKSTREAM_KAFKA_* variables for these settings (unset ones left out)."""
        values = {
            "HOOKSTREAM_KAFKA_BOOTSTRAP": self.bootstrap,
            "HOOKSTREAM_KAFKA_SECURITY_PROTOCOL": self.security_protocol,
            "HOOKSTREAM_KAFKA_SASL_MECHANISM": self.sasl_mechanism,
            "HOOKSTREAM_KAFKA_SASL_USERNAME": self.sasl_username,
            "HOOKSTREAM_KAFKA_SASL_PASSWORD": self.sasl_password,
            "HOOKSTREAM_KAFKA_SSL_CAFILE": self.ssl_cafile,
        }
        return {k: v for k, v in values.items() if v is not None}

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer, admin client or client: the
        translation of core/kafka/clients.py, the one place that makes it."""
        from pydantic import SecretStr

        from core.kafka.clients import KafkaConnection

        password = None if self.sasl_password is None else SecretStr(self.sasl_password)
        return KafkaConnection(
            bootstrap=self.bootstrap, security_protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism, sasl_username=self.sasl_username,
            sasl_password=password, ssl_cafile=self.ssl_cafile).aiokafka_kwargs()


def make_certificates(folder: Path, days: int = 825) -> tuple[Path, Path, str]:
    """A CA and a broker certificate for 127.0.0.1 and localhost, signed by it.

    Returns (CA certificate PEM for clients, broker PKCS12 keystore, keystore password). The
    CA's key is not kept: nothing else is ever signed with it.
    """
    import datetime
    import ipaddress
    import secrets

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hookstream local Kafka CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    password = secrets.token_hex(16)
    keystore = pkcs12.serialize_key_and_certificates(
        b"broker", key, cert, [ca],
        serialization.BestAvailableEncryption(password.encode()))
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    ks_file = folder / "broker.p12"
    ks_file.touch(mode=0o600)
    ks_file.write_bytes(keystore)
    return ca_file, ks_file, password


@dataclass(frozen=True)
class NodePorts:
    port: int  # clients
    controller_port: int
    internal_port: int | None = None  # SASL_SSL only: inter-broker PLAINTEXT


class LocalKafkaCluster:
    """Several combined broker+controller nodes on 127.0.0.1, each in `data_dir/node-N`.

    `data_dir/cluster.json` records the layout (ports, cluster id, security, secrets) so that
    `status`, `stop` and node restarts find the same cluster; `data_dir/client.json` holds the
    client settings (both files readable by the owner only).
    """

    def __init__(self, data_dir: Path, brokers: int = 3, port: int = 9092,
                 ports: list[NodePorts] | None = None, security: str = "plaintext",
                 heap: str = "512m", log_level: str = "INFO", quick_jvm: bool = False) -> None:
        if security not in SECURITY_CHOICES:
            raise KafkaLaunchError(f"security must be one of {SECURITY_CHOICES}, not {security!r}")
        self.data_dir = Path(data_dir).resolve()
        self.heap = heap
        self.log_level = log_level
        recorded = self._recorded()
        if recorded is not None:
            # Storage is formatted for the recorded layout: keep it, whatever was asked.
            self.layout = recorded
        else:
            if ports is None:
                # Clients on port..port+n-1, controllers next, then the internal listeners.
                ports = [NodePorts(port + i, port + brokers + i,
                                   port + 2 * brokers + i if security == "sasl_ssl" else None)
                         for i in range(brokers)]
            if len(ports) != brokers:
                raise KafkaLaunchError(f"{brokers} brokers need {brokers} port sets")
            self.layout = {"brokers": brokers, "security": security,
                           "ports": [p.__dict__ for p in ports], "cluster_id": new_cluster_id(),
                           "quick_jvm": quick_jvm}

    # -- layout -----------------------------------------------------------------------------

    @property
    def _layout_file(self) -> Path:
        return self.data_dir / "cluster.json"

    @property
    def client_file(self) -> Path:
        return self.data_dir / "client.json"

    def _recorded(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._layout_file.read_text()))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise KafkaLaunchError(f"{self._layout_file} is damaged: {exc}") from exc

    @staticmethod
    def recorded_in(data_dir: Path) -> bool:
        """Whether `data_dir` holds a cluster (rather than a single node)."""
        return (Path(data_dir) / "cluster.json").exists()

    @property
    def brokers(self) -> int:
        return int(self.layout["brokers"])

    @property
    def security(self) -> str:
        return str(self.layout["security"])

    @property
    def ports(self) -> list[NodePorts]:
        return [NodePorts(**p) for p in self.layout["ports"]]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p.port}" for p in self.ports)

    def _write_private(self, path: Path, data: dict[str, Any]) -> None:
        path.touch(mode=0o600)
        path.write_text(json.dumps(data, indent=2) + "\n")

    def _prepare(self) -> None:
        """First start: certificates and SCRAM passwords, then the layout on disk."""
        if self._layout_file.exists():
            return
        import secrets

        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.security == "sasl_ssl":
            ca_file, keystore, ks_password = make_certificates(self.data_dir / "tls")
            self.layout |= {
                "ca_file": str(ca_file), "keystore": str(keystore),
                "keystore_password": ks_password,
                "users": {CLIENT_USER: secrets.token_hex(16), ADMIN_USER: secrets.token_hex(16)},
            }
        self._write_private(self._layout_file, self.layout)
        self._write_private(self.client_file, self.client.__dict__)

    # -- client settings --------------------------------------------------------------------

    def _settings(self, user: str) -> KafkaClientSettings:
        if self.security == "plaintext":
            return KafkaClientSettings(self.bootstrap)
        return KafkaClientSettings(
            self.bootstrap, "SASL_SSL", "SCRAM-SHA-512", user, self.layout["users"][user],
            self.layout["ca_file"])

    @property
    def client(self) -> KafkaClientSettings:
        """What the services use: the client user (SCRAM-SHA-512; SHA-256 works too)."""
        return self._settings(CLIENT_USER)

    @property
    def admin(self) -> KafkaClientSettings:
        """The launcher's own user."""
        return self._settings(ADMIN_USER)

    # -- nodes ------------------------------------------------------------------------------

    def node(self, node_id: int) -> LocalKafka:
        """Node `node_id` (1-based)."""
        if not 1 <= node_id <= self.brokers:
            raise KafkaLaunchError(f"no node {node_id}: the cluster has nodes 1..{self.brokers}")
        ports = self.ports
        voters = ",".join(f"{i + 1}@127.0.0.1:{p.controller_port}" for i, p in enumerate(ports))
        mine = ports[node_id - 1]
        sasl = self.security == "sasl_ssl"
        role = ClusterRole(
            node_id=node_id, voters=voters, cluster_id=str(self.layout["cluster_id"]),
            replicas=min(3, self.brokers), internal_port=mine.internal_port,
            keystore=self.layout.get("keystore"),
            keystore_password=self.layout.get("keystore_password"),
            scram=tuple(f"{m}=[name={u},password={pw}]" for u, pw in
                        self.layout.get("users", {}).items() for m in SCRAM_MECHANISMS)
            if sasl else ())
        return LocalKafka(self.data_dir / f"node-{node_id}", port=mine.port,
                          controller_port=mine.controller_port, heap=self.heap,
                          log_level=self.log_level, role=role,
                          quick_jvm=bool(self.layout.get("quick_jvm")))

    @property
    def nodes(self) -> list[LocalKafka]:
        return [self.node(i) for i in range(1, self.brokers + 1)]

    def state(self) -> dict[int, BrokerState | None]:
        """Each node's recorded process, None where it does not run."""
        return {n.node_id: n.state() for n in self.nodes}

    def _wait_for(self, procs: dict[int, subprocess.Popen[bytes]], brokers: int,
                  timeout: float) -> None:
        """Until the client listener lists `brokers` brokers; fails fast if a JVM exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node_id, proc in procs.items():
                if (err := self.node(node_id).exited(proc)) is not None:
                    raise err
            if _live_brokers_blocking(self.bootstrap, 3.0, self.admin) >= brokers:
                return
            time.sleep(0.3)
        raise KafkaLaunchError(
            f"the cluster did not list {brokers} brokers within {timeout:.0f}s; logs under "
            f"{self.data_dir}/node-*/logs")

    def start(self, timeout: float = 120.0) -> KafkaClientSettings:
        """Start every node that does not run (all in parallel), wait until the client
        listener lists all of them, and return the client settings."""
        self._prepare()
        down = [n for n in self.nodes if n.state() is None]
        classpath()  # once, before the threads: Maven may have to fetch
        with concurrent.futures.ThreadPoolExecutor(len(down) or 1) as pool:
            launched = list(pool.map(lambda n: (n.node_id, n.launch()), down))
        procs = dict(launched)
        try:
            self._wait_for(procs, self.brokers, timeout)
        except KafkaLaunchError:
            self.stop()
            raise
        return self.client

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every node by its recorded pid: SIGTERM to all at once (a controlled shutdown
        needs the controller quorum, so nodes must not wait for each other), SIGKILL for any
        still running after `timeout`. Returns whether any node was running."""
        states = {n.node_id: n for n in self.nodes}
        pids = {i: st.pid for i, n in states.items() if (st := n.state()) is not None}
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):  # it died since state() looked
                os.kill(pid, signal.SIGCONT)  # a paused node cannot shut down
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(pid_alive(p) for p in pids.values()) and time.monotonic() < deadline:
            for pid in pids.values():
                _reap(pid)
            time.sleep(0.1)
        for pid in pids.values():
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                _reap(pid)
                time.sleep(0.05)
            _reap(pid)
        for n in states.values():
            n._state_file.unlink(missing_ok=True)
        return bool(pids)

    # -- faults -----------------------------------------------------------------------------

    def _running_pid(self, node_id: int) -> int:
        st = self.node(node_id).state()
        if st is None:
            raise KafkaLaunchError(f"node {node_id} is not running")
        return st.pid

    def kill_node(self, node_id: int) -> int:
        """SIGKILL node `node_id` (no controlled shutdown) and wait until it is gone; its
        data dir stays for `restart_node`. Returns the killed pid."""
        pid = self._running_pid(node_id)
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            _reap(pid)
            time.sleep(0.05)
        _reap(pid)
        return pid

    def restart_node(self, node_id: int, timeout: float = 90.0) -> BrokerState:
        """Start node `node_id` again with its config and data dir, and wait until the
        cluster lists every broker."""
        node = self.node(node_id)
        if node.state() is not None:
            raise KafkaLaunchError(f"node {node_id} is still running")
        proc = node.launch()
        self._wait_for({node_id: proc}, self.brokers, timeout)
        st = node.state()
        assert st is not None  # launched and listed by the cluster
        return st

    def pause_node(self, node_id: int) -> int:
        """SIGSTOP node `node_id` and wait until every thread of it has stopped (the signal is
        delivered asynchronously: on a loaded machine a thread runs on for a moment). It then
        holds its sockets but answers nothing. Returns its pid."""
        pid = self._running_pid(node_id)
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10.0
        while not _all_threads_stopped(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        return pid

    def resume_node(self, node_id: int) -> int:
        """SIGCONT a paused node."""
        pid = self._running_pid(node_id)
        os.kill(pid, signal.SIGCONT)
        return pid


@contextlib.contextmanager
def scratch_cluster(data_dir: Path | None = None, brokers: int = 3, security: str = "sasl_ssl",
                    log_level: str = "WARN", heap: str = "512m", quick_jvm: bool = False,
                    ) -> Iterator[LocalKafkaCluster]:
    """A cluster of our own on free ports (in `data_dir` or a temporary one), stopped by
    pid at the end. For tests (`quick_jvm`) and benchmarks (the default: full JIT)."""
    with contextlib.ExitStack() as cleanup:
        if data_dir is None:
            data_dir = Path(cleanup.enter_context(
                tempfile.TemporaryDirectory(prefix="hookstream-kafka-cluster-")))
        sasl = security == "sasl_ssl"
        free = free_ports(brokers * (3 if sasl else 2))
        ports = [NodePorts(free.pop(), free.pop(), free.pop() if sasl else None)
                 for _ in range(brokers)]
        cluster = LocalKafkaCluster(data_dir, brokers=brokers, ports=ports, security=security,
                                    heap=heap, log_level=log_level, quick_jvm=quick_jvm)
        cleanup.callback(cluster.stop)
        cluster.start()
        yield cluster
