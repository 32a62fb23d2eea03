"""The one place that builds Kafka clients: aiokafka, librdkafka (confluent-kafka) and Faust.

Every client of hookstream is built here from a `KafkaConnection` (bootstrap list and
security, read from the `HOOKSTREAM_KAFKA_*` settings), so TLS, SASL and the client id reach
all of them alike; tests/core/test_kafka_clients_only_here.py fails when a module builds a
client another way. The three clients spell the same settings differently:

- bootstrap "a:1,b:2": aiokafka `bootstrap_servers`, librdkafka `bootstrap.servers`, Faust
  "kafka://a:1;kafka://b:2" (Faust splits on ';' and wants a scheme on each);
- protocol, SASL mechanism, user and password: aiokafka `security_protocol`,
  `sasl_mechanism`, `sasl_plain_username/_password`; librdkafka `security.protocol`,
  `sasl.mechanisms`, `sasl.username/password`; Faust `broker_credentials`
  (`SASLCredentials`, or `SSLCredentials` for TLS alone);
- CA, client certificate and key: aiokafka and Faust one `ssl_context`
  (`aiokafka.helpers.create_ssl_context`), librdkafka `ssl.ca/certificate/key.location`.

OAUTHBEARER is not offered: aiokafka and Faust take a token only from Python code (an
`AbstractTokenProvider`), librdkafka from its own OIDC settings, so one setting cannot drive
all three cleanly (see docs/DESIGN.md, "Kafka security settings").

`describe_connect_error` turns a failed first connection into one line a person acts on
(wrong credentials, untrusted certificate, unreachable bootstrap list); `ConnectGate` is a
service's start-up wait for Kafka that says it once and keeps readiness false meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as aio_errors
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest
from pydantic import SecretStr

from core.serving import Failed

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

# What a produce request carries besides the body: the key, the headers hookstream adds
# (content type, received-at, request id, idempotency key; the dead-letter topic adds the
# error and its source) and the record batch's framing. 64 KiB is far above their sum.
RECORD_OVERHEAD_BYTES = 64 * 1024
# The producers' limit when no body limit is known (aiokafka's and librdkafka's default).
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
# How long the broker may hold a long-lived consumer's fetch that finds nothing new
# (`fetch_max_wait_ms`). The broker answers as soon as a record is readable (read_committed:
# as soon as a commit marker moves the last stable offset), so this bounds only idle polls,
# and every idle poll costs the broker a request: at 50-100 ms each idle consumer cost the
# broker several percent of a core (issue 17, bench/README.md). Not for short reads to a
# known end, which never wait.
IDLE_FETCH_WAIT_MS = 500


def max_request_bytes(max_body_bytes: int) -> int:
    """The producers' request limit that admits the largest body the ingress accepts
    (`HOOKSTREAM_MAX_BODY_BYTES`) with its key, headers and batch framing."""
    return max(DEFAULT_MAX_REQUEST_BYTES, max_body_bytes + RECORD_OVERHEAD_BYTES)


def parse_bootstrap(value: str) -> tuple[str, ...]:
    """ "a:1, b:2" -> ("a:1", "b:2"); ValueError naming the entry that is not host:port."""
    servers = tuple(part.strip() for part in value.split(",") if part.strip())
    if not servers:
        raise ValueError("the bootstrap list is empty: give host:port[,host:port...]")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{server!r} in the bootstrap list is not host:port")
    return servers


def _split_host_port(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)  # [::1]:9092 -> ::1


def _secret(value: SecretStr | None) -> str | None:
    """The secret's text; None when unset or empty (the settings' "no password")."""
    return (value.get_secret_value() or None) if value is not None else None


@dataclass(frozen=True)
class KafkaConnection:
    """Where Kafka is and how to talk to it: everything a client needs besides its role."""

    bootstrap: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: SecretStr | None = field(default=None, repr=False)
    client_id: str = "hookstream"
    # Producers' max_request_size / message.max.bytes (see max_request_bytes).
    max_request_size: int = DEFAULT_MAX_REQUEST_BYTES

    def __post_init__(self) -> None:
        object.__setattr__(self, "bootstrap", ",".join(parse_bootstrap(self.bootstrap)))
        problem = security_problem(self.security_protocol, self.sasl_mechanism,
                                   self.sasl_username, _secret(self.sasl_password),
                                   self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if problem:
            raise ValueError(problem)

    @classmethod
    def from_settings(cls, s: Settings) -> KafkaConnection:
        return cls(
            bootstrap=s.kafka_bootstrap, security_protocol=s.kafka_security_protocol,
            sasl_mechanism=s.kafka_sasl_mechanism, sasl_username=s.kafka_sasl_username,
            sasl_password=s.kafka_sasl_password,
            ssl_cafile=_path(s.kafka_ssl_cafile), ssl_certfile=_path(s.kafka_ssl_certfile),
            ssl_keyfile=_path(s.kafka_ssl_keyfile), ssl_key_password=s.kafka_ssl_key_password,
            client_id=s.kafka_client_id, max_request_size=max_request_bytes(s.max_body_bytes))

    def __str__(self) -> str:
        return self.bootstrap  # what log lines name; never the credentials

    def with_bootstrap(self, bootstrap: str) -> KafkaConnection:
        """The same security, another bootstrap list (an operator's --bootstrap)."""
        return replace(self, bootstrap=bootstrap)

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(self.bootstrap.split(","))

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of aiokafka and Faust (None without TLS); it verifies the broker's
        certificate and host name against `ssl_cafile` (or the system's CAs)."""
        if not self.uses_tls:
            return None
        return create_ssl_context(cafile=self.ssl_cafile, certfile=self.ssl_certfile,
                                  keyfile=self.ssl_keyfile,
                                  password=_secret(self.ssl_key_password))

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka client takes (producer, consumer, admin)."""
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap,
                              "security_protocol": self.security_protocol,
                              "client_id": self.client_id}
        if self.uses_tls:
            kw["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            kw.update(sasl_mechanism=self.sasl_mechanism,
                      sasl_plain_username=self.sasl_username,
                      sasl_plain_password=_secret(self.sasl_password))
        return kw


# What the functions that build clients take (their parameter is still called `bootstrap`):
# a KafkaConnection, or a bare "host:port[,...]" for a PLAINTEXT local broker (tests).
Kafka = KafkaConnection | str


def connection(kafka: Kafka) -> KafkaConnection:
    return kafka if isinstance(kafka, KafkaConnection) else KafkaConnection(bootstrap=kafka)


def _path(value: object) -> str | None:
    return None if value is None else str(value)


def security_problem(protocol: str, mechanism: str | None, username: str | None,
                     password: str | None, cafile: str | None, certfile: str | None,
                     keyfile: str | None) -> str | None:
    """What is wrong with this combination of security settings, or None. The text names
    the HOOKSTREAM_KAFKA_* variables, so it serves as the settings' own error message."""
    p = "HOOKSTREAM_KAFKA_"
    if protocol not in SECURITY_PROTOCOLS:
        return f"{p}SECURITY_PROTOCOL={protocol!r}: use one of {', '.join(SECURITY_PROTOCOLS)}"
    sasl = protocol.startswith("SASL_")
    if sasl:
        missing = [name for name, v in (("SASL_MECHANISM", mechanism),
                                         ("SASL_USERNAME", username),
                                         ("SASL_PASSWORD", password)) if not v]
        if missing:
            return (f"{p}SECURITY_PROTOCOL={protocol} needs "
                    + ", ".join(p + m for m in missing))
        if mechanism not in SASL_MECHANISMS:
            return (f"{p}SASL_MECHANISM={mechanism!r}: use one of {', '.join(SASL_MECHANISMS)} "
                    "(OAUTHBEARER is not supported, see docs/DESIGN.md)")
    elif mechanism or username or password:
        return (f"{p}SASL_MECHANISM/USERNAME/PASSWORD are set but {p}SECURITY_PROTOCOL="
                f"{protocol} does not use SASL: use SASL_SSL (or SASL_PLAINTEXT)")
    if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and (cafile or certfile or keyfile):
        return (f"{p}SSL_* files are set but {p}SECURITY_PROTOCOL={protocol} does not use "
                "TLS: use SSL or SASL_SSL")
    if bool(certfile) != bool(keyfile):
        return (f"mutual TLS needs both {p}SSL_CERTFILE and {p}SSL_KEYFILE "
                "(the client certificate and its private key)")
    return None


# --- the factories ---------------------------------------------------------------------------

def _merged(kafka: Kafka, kw: Mapping[str, Any]) -> dict[str, Any]:
    """The connection's settings under the caller's (a caller's client_id wins)."""
    return {**connection(kafka).aiokafka_kwargs(), **kw}


def producer(kafka: Kafka, **kw: Any) -> AIOKafkaProducer:
    """An aiokafka producer; `max_request_size` admits the ingress's largest body unless
    the caller says otherwise."""
    conn = connection(kafka)
    return AIOKafkaProducer(**_merged(conn, {"max_request_size": conn.max_request_size, **kw}))


def consumer(kafka: Kafka, *topics: str, **kw: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **_merged(kafka, kw))


def admin(kafka: Kafka, **kw: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**_merged(kafka, kw))


def librdkafka_config(kafka: Kafka) -> dict[str, Any]:
    """The connection as librdkafka (confluent-kafka) configuration properties."""
    conn = connection(kafka)
    config: dict[str, Any] = {"bootstrap.servers": conn.bootstrap,
                              "security.protocol": conn.security_protocol.lower(),
                              "client.id": conn.client_id,
                              "message.max.bytes": conn.max_request_size}
    if conn.uses_sasl:
        config.update({"sasl.mechanisms": conn.sasl_mechanism,
                       "sasl.username": conn.sasl_username,
                       "sasl.password": _secret(conn.sasl_password)})
    if conn.uses_tls:
        for key, value in (("ssl.ca.location", conn.ssl_cafile),
                           ("ssl.certificate.location", conn.ssl_certfile),
                           ("ssl.key.location", conn.ssl_keyfile),
                           ("ssl.key.password", _secret(conn.ssl_key_password))):
            if value:
                config[key] = value
        # Check the broker's host name as aiokafka does (librdkafka >= 2.0's default too).
        config["ssl.endpoint.identification.algorithm"] = "https"
    return config


def rdkafka_producer(kafka: Kafka, config: Mapping[str, Any]) -> Any:
    """A confluent-kafka Producer: the connection's properties under `config`'s."""
    from confluent_kafka import Producer

    return Producer({**librdkafka_config(kafka), **config})


def faust_broker(kafka: Kafka) -> dict[str, Any]:
    """`broker` and `broker_credentials` for `faust.App`: Faust splits its broker list on
    ';' and wants a scheme on each, so "a:1,b:2" becomes "kafka://a:1;kafka://b:2"."""
    import faust

    conn = connection(kafka)
    broker = ";".join(f"kafka://{server}" for server in conn.servers)
    credentials: Any = None
    if conn.uses_sasl:
        credentials = faust.SASLCredentials(
            username=conn.sasl_username, password=_secret(conn.sasl_password),
            ssl_context=conn.ssl_context(), mechanism=conn.sasl_mechanism)
    elif conn.uses_tls:
        credentials = faust.SSLCredentials(conn.ssl_context())
    return {"broker": broker, "broker_credentials": credentials,
            "broker_client_id": conn.client_id}


def faust_app(kafka: Kafka, app_id: str, **kw: Any) -> Any:
    """A `faust.App` connected as `kafka` says."""
    import faust

    return faust.App(app_id, **faust_broker(kafka), **kw)


# --- what went wrong at the first connection ----------------------------------------------

# librdkafka's error codes, by name (confluent_kafka.KafkaError attributes).
_RD_AUTH = ("_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "TOPIC_AUTHORIZATION_FAILED",
            "CLUSTER_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED")
_RD_SSL = ("_SSL",)
_RD_UNREACHABLE = ("_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE", "_TIMED_OUT",
                   "_TIMED_OUT_QUEUE", "_MSG_TIMED_OUT")
# A produce error that concerns one record, not the connection (a per-message failure).
_RD_RECORD = ("MSG_SIZE_TOO_LARGE", "INVALID_RECORD", "CORRUPT_MESSAGE",
              "RECORD_LIST_TOO_LARGE", "INVALID_MSG_SIZE")


def _rdkafka_name(exc: BaseException) -> tuple[str, str] | None:
    """(code name, text) of a confluent-kafka KafkaException/KafkaError, else None."""
    try:
        from confluent_kafka import KafkaError, KafkaException
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    err: Any = exc
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        err = exc.args[0]
    if not isinstance(err, KafkaError):
        return None
    return str(err.name()), str(err.str())


def _chain(exc: Any) -> list[Any]:
    """The error and its causes (a librdkafka KafkaError is no exception: itself only)."""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen:
        seen.append(e)
        e = getattr(e, "__cause__", None) or getattr(e, "__context__", None)
    return seen


def connect_error_kind(exc: BaseException) -> str:
    """'auth', 'tls', 'file', 'unreachable' or 'other' for an error of a first connection."""
    for e in _chain(exc):
        rd = _rdkafka_name(e)
        if rd is not None:
            name, text = rd
            if name in _RD_AUTH or "authentication" in text.lower():
                return "auth"
            if name in _RD_SSL or "ssl" in text.lower() or "certificate" in text.lower():
                return "tls"
            if name in _RD_UNREACHABLE:
                return "unreachable"
            continue
        if isinstance(e, aio_errors.SaslAuthenticationFailed | aio_errors.IllegalSaslStateError
                      | aio_errors.UnsupportedSaslMechanismError
                      | aio_errors.AuthenticationFailedError
                      | aio_errors.AuthenticationMethodNotSupported):
            return "auth"
        if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError) \
                and getattr(e, "filename", None):
            return "file"  # a CA, certificate or key file that cannot be read
        if isinstance(e, ssl.SSLError | ssl.CertificateError):
            return "tls"
        if isinstance(e, aio_errors.KafkaConnectionError | OSError | TimeoutError
                      | aio_errors.KafkaTimeoutError | aio_errors.RequestTimedOutError):
            return "unreachable"
    return "other"


def describe_connect_error(exc: BaseException, conn: KafkaConnection | None = None) -> str:
    """One line that says why Kafka could not be reached: wrong credentials, an untrusted
    certificate, or an unreachable bootstrap list (named). No secret is ever in it."""
    kind = connect_error_kind(exc)
    servers = conn.bootstrap if conn is not None else "the bootstrap servers"
    detail = _short(exc)
    if kind == "auth" and any(isinstance(e, aio_errors.IllegalSaslStateError
                                         | aio_errors.UnsupportedSaslMechanismError)
                              for e in _chain(exc)):
        mech = conn.sasl_mechanism if conn is not None else "SASL"
        return (f"Kafka at {servers} does not accept SASL {mech} on this listener: check "
                "HOOKSTREAM_KAFKA_SASL_MECHANISM, HOOKSTREAM_KAFKA_SECURITY_PROTOCOL and the "
                f"port ({detail})")
    if kind == "auth":
        who = f" as {conn.sasl_username!r} ({conn.sasl_mechanism})" if conn and conn.uses_sasl \
            else ""
        return (f"Kafka refused the credentials{who}: SASL authentication failed at "
                f"{servers}; check HOOKSTREAM_KAFKA_SASL_USERNAME/PASSWORD/MECHANISM "
                f"({detail})")
    if kind == "tls":
        if any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(exc)) \
                or "certificate" in detail.lower():
            ca = f" against {conn.ssl_cafile}" if conn and conn.ssl_cafile else ""
            return (f"the TLS handshake with Kafka at {servers} failed: the broker's "
                    f"certificate is not trusted{ca} (or its name does not match); check "
                    f"HOOKSTREAM_KAFKA_SSL_CAFILE ({detail})")
        return (f"the TLS handshake with Kafka at {servers} failed: is that listener TLS? "
                f"check HOOKSTREAM_KAFKA_SECURITY_PROTOCOL and the port ({detail})")
    if kind == "file":
        name = next(getattr(e, "filename", None) for e in _chain(exc)
                    if getattr(e, "filename", None))
        return (f"cannot read {name} for the TLS connection to Kafka at {servers}: check "
                f"HOOKSTREAM_KAFKA_SSL_CAFILE/CERTFILE/KEYFILE ({detail})")
    if kind == "unreachable":
        hint = ""
        if conn is not None and conn.uses_tls and any(
                isinstance(e, ConnectionResetError | ssl.SSLEOFError) for e in _chain(exc)):
            hint = " (a reset during the TLS handshake: is that listener TLS?)"
        return (f"no broker of the bootstrap list {servers} answers{hint}; check "
                f"HOOKSTREAM_KAFKA_BOOTSTRAP and the network ({detail})")
    return f"Kafka at {servers} could not be used: {detail}"


def _short(exc: BaseException) -> str:
    rd = _rdkafka_name(exc)
    if rd is not None:
        return f"{rd[0]}: {rd[1]}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_record_error(exc: BaseException) -> bool:
    """True for a produce error that concerns this one record (too large, invalid), not the
    connection: it fails that request only and says nothing of the cluster's health."""
    for e in _chain(exc):
        rd = _rdkafka_name(e)
        if rd is not None:
            return rd[0] in _RD_RECORD
        if isinstance(e, aio_errors.MessageSizeTooLargeError | aio_errors.RecordTooLargeError
                      | aio_errors.RecordListTooLargeError | aio_errors.CorruptRecordException):
            return True
    return False


async def check_connection(conn: KafkaConnection, timeout: float = 5.0) -> None:
    """Connect to the bootstrap servers as the clients will (TLS, SASL) and ask for
    metadata; return at the first that answers, else raise the most telling error of all:
    a refused credential or certificate says more than a refused connection."""
    errors: list[BaseException] = []
    host_kw = {k: v for k, v in conn.aiokafka_kwargs().items()
               if k in ("security_protocol", "ssl_context", "sasl_mechanism",
                        "sasl_plain_username", "sasl_plain_password", "client_id")}
    for server in conn.servers:
        host, port = _split_host_port(server)
        try:
            async with asyncio.timeout(timeout):
                c = await create_conn(host, port, request_timeout_ms=int(timeout * 1000),
                                      **host_kw)
                try:
                    await c.send(MetadataRequest([]))
                finally:
                    c.close()
            return
        except (OSError, TimeoutError, aio_errors.KafkaError) as exc:
            errors.append(exc)
    rank = {"file": 0, "auth": 1, "tls": 2, "other": 3, "unreachable": 4}
    raise min(errors, key=lambda e: rank[connect_error_kind(e)])


class ConnectGate:
    """A service's first contact with Kafka: wait until the bootstrap list answers, saying
    why not in one line (and again only when the reason changes, or every `remind` seconds),
    retrying with a growing delay. `ok` and `reason` are for the service's /readyz."""

    def __init__(self, conn: KafkaConnection, service: str, *, first_delay: float = 0.5,
                 max_delay: float = 30.0, remind: float = 300.0,
                 timeout: float = 5.0) -> None:
        self.conn = conn
        self.service = service
        self.first_delay, self.max_delay, self.remind = first_delay, max_delay, remind
        self.timeout = timeout
        self.ok = False
        self.reason: str | None = f"not yet connected to Kafka at {conn.bootstrap}"

    async def wait(self) -> None:
        delay = self.first_delay
        said: str | None = None
        said_at = 0.0
        while True:
            try:
                await check_connection(self.conn, self.timeout)
            except (OSError, TimeoutError, aio_errors.KafkaError) as exc:
                reason = describe_connect_error(exc, self.conn)
                self.reason = reason
                now = time.monotonic()
                if reason != said or now - said_at >= self.remind:
                    log.error("%s cannot connect to Kafka: %s; retrying (every %.0fs at most)",
                              self.service, reason, self.max_delay)
                    said, said_at = reason, now
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
                continue
            if said is not None:
                log.warning("%s: Kafka at %s answers now", self.service, self.conn.bootstrap)
            self.ok, self.reason = True, None
            return

    def check(self) -> bool | Failed:
        """For /readyz: True once Kafka answered; else why not."""
        return True if self.ok else Failed(self.reason or "not yet connected to Kafka")

    def checks(self) -> dict[str, bool]:
        return {"kafka": self.ok}

    def why(self) -> dict[str, str]:
        """The reason readiness is false, for the /readyz body."""
        return {} if self.reason is None else {"kafka": self.reason}
