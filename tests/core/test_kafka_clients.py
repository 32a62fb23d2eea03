"""core/kafka/clients.py: the settings as each client spells them, the checks of their
combinations, and the one-line reasons a first connection failed."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import subprocess
from pathlib import Path

import faust
import pytest
from aiokafka import errors as aio_errors
from confluent_kafka import KafkaError, KafkaException
from pydantic import ValidationError

from core.kafka import clients
from core.kafka.clients import (
    ConnectGate,
    KafkaConnection,
    connect_error_kind,
    describe_connect_error,
    faust_broker,
    is_record_error,
    librdkafka_config,
)
from core.settings import Settings

SASL = dict(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="hook", kafka_sasl_password="s3cret-pw")


def conn(**kw: object) -> KafkaConnection:
    return KafkaConnection.from_settings(Settings(**kw))  # type: ignore[arg-type]


def test_a_comma_list_is_one_bootstrap_for_aiokafka_and_librdkafka_and_kafka_urls_for_faust(
) -> None:
    c = conn(kafka_bootstrap=" b-1:9092, b-2:9093 ,[::1]:9094")
    assert c.bootstrap == "b-1:9092,b-2:9093,[::1]:9094"
    assert c.aiokafka_kwargs()["bootstrap_servers"] == "b-1:9092,b-2:9093,[::1]:9094"
    assert librdkafka_config(c)["bootstrap.servers"] == "b-1:9092,b-2:9093,[::1]:9094"
    fb = faust_broker(c)
    assert fb["broker"] == "kafka://b-1:9092;kafka://b-2:9093;kafka://[::1]:9094"
    assert fb["broker_credentials"] is None
    # Faust itself reads it as three brokers.
    app = faust.App("t", **fb)
    assert [(u.host, u.port) for u in app.conf.broker] == [
        ("b-1", 9092), ("b-2", 9093), ("::1", 9094)]


def test_plaintext_is_the_default_and_carries_no_security() -> None:
    c = conn()
    assert c.aiokafka_kwargs() == {"bootstrap_servers": "127.0.0.1:9092",
                                   "security_protocol": "PLAINTEXT", "client_id": "hookstream"}
    assert librdkafka_config(c) == {"bootstrap.servers": "127.0.0.1:9092",
                                    "security.protocol": "plaintext", "client.id": "hookstream",
                                    "message.max.bytes": 1024 * 1024 + 64 * 1024}


async def test_sasl_ssl_scram_in_each_client() -> None:
    c = conn(**SASL, kafka_client_id="acme-hooks")
    kw = c.aiokafka_kwargs()
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("hook", "s3cret-pw")
    assert isinstance(kw["ssl_context"], ssl.SSLContext)
    assert kw["ssl_context"].check_hostname and kw["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert kw["client_id"] == "acme-hooks"
    rd = librdkafka_config(c)
    assert {k: rd[k] for k in ("security.protocol", "sasl.mechanisms", "sasl.username",
                               "sasl.password", "client.id")} == {
        "security.protocol": "sasl_ssl", "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "hook", "sasl.password": "s3cret-pw", "client.id": "acme-hooks"}
    creds = faust_broker(c)["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert (creds.username, creds.password) == ("hook", "s3cret-pw")
    # The factories pass it all on.
    producer = clients.producer(c)
    assert producer.client._security_protocol == "SASL_SSL"
    assert producer.client._sasl_mechanism == "SCRAM-SHA-512"


def test_the_password_is_never_in_the_connections_text() -> None:
    c = conn(**SASL)
    assert "s3cret-pw" not in repr(c) and "s3cret-pw" not in str(c)


def test_mutual_tls_files_reach_librdkafka_and_the_ssl_context(tmp_path: Path) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=hookstream-test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    c = conn(kafka_security_protocol="SSL", kafka_ssl_cafile=cert,
             kafka_ssl_certfile=cert, kafka_ssl_keyfile=key)
    rd = librdkafka_config(c)
    assert rd["ssl.ca.location"] == str(cert)
    assert rd["ssl.certificate.location"] == str(cert)
    assert rd["ssl.key.location"] == str(key)
    assert "sasl.username" not in rd
    assert isinstance(faust_broker(c)["broker_credentials"], faust.SSLCredentials)
    assert isinstance(c.aiokafka_kwargs()["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize(("given", "says"), [
    ({"kafka_security_protocol": "SASL_SSL"},
     "SASL_SSL needs HOOKSTREAM_KAFKA_SASL_MECHANISM, HOOKSTREAM_KAFKA_SASL_USERNAME, "
     "HOOKSTREAM_KAFKA_SASL_PASSWORD"),
    ({**SASL, "kafka_sasl_password": ""}, "needs HOOKSTREAM_KAFKA_SASL_PASSWORD"),
    ({"kafka_sasl_username": "x"}, "does not use SASL"),
    ({"kafka_ssl_cafile": "/ca.pem"}, "does not use TLS"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/c.pem"},
     "mutual TLS needs both"),
    ({"kafka_bootstrap": "a:1,b"}, "'b' in the bootstrap list is not host:port"),
    ({"kafka_bootstrap": " , "}, "the bootstrap list is empty"),
    ({"kafka_sasl_mechanism": "OAUTHBEARER", "kafka_security_protocol": "SASL_SSL"},
     "kafka_sasl_mechanism"),
])
def test_combinations_are_checked_at_load_with_a_clear_message(
        given: dict[str, str], says: str) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(**given)  # type: ignore[arg-type]
    assert says in str(err.value)
    assert "s3cret-pw" not in str(err.value)  # the input is not echoed


async def test_max_request_size_admits_the_largest_body_with_its_headers() -> None:
    c = conn(max_body_bytes=5 * 1024 * 1024)
    assert c.max_request_size == 5 * 1024 * 1024 + clients.RECORD_OVERHEAD_BYTES
    assert librdkafka_config(c)["message.max.bytes"] == c.max_request_size
    assert clients.producer(c)._max_request_size == c.max_request_size
    assert clients.producer(c, max_request_size=2048)._max_request_size == 2048


# --- the reasons -----------------------------------------------------------------------------

def rd(code: int) -> KafkaException:
    return KafkaException(KafkaError(code))


@pytest.mark.parametrize(("exc", "kind"), [
    (aio_errors.SaslAuthenticationFailed("bad"), "auth"),
    (aio_errors.UnsupportedSaslMechanismError("no SCRAM"), "auth"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed"), "tls"),
    (ConnectionRefusedError(111, "Connection refused"), "unreachable"),
    (aio_errors.KafkaConnectionError("Unable to bootstrap"), "unreachable"),
    (TimeoutError(), "unreachable"),
    (socket.gaierror(-2, "Name or service not known"), "unreachable"),
    (rd(KafkaError._AUTHENTICATION), "auth"),
    (rd(KafkaError.SASL_AUTHENTICATION_FAILED), "auth"),
    (rd(KafkaError._SSL), "tls"),
    (rd(KafkaError._TRANSPORT), "unreachable"),
    (rd(KafkaError._ALL_BROKERS_DOWN), "unreachable"),
    (KafkaError(KafkaError._ALL_BROKERS_DOWN), "unreachable"),
    (FileNotFoundError(2, "No such file or directory", "/etc/kafka/ca.pem"), "file"),
    (ValueError("odd"), "other"),
])
def test_each_failure_has_its_kind(exc: BaseException, kind: str) -> None:
    assert connect_error_kind(exc) == kind


def test_the_line_names_the_problem_and_what_to_check_never_the_password() -> None:
    c = conn(**SASL, kafka_bootstrap="b-1:9096,b-2:9096")
    auth = describe_connect_error(aio_errors.SaslAuthenticationFailed("x"), c)
    assert "SASL authentication failed" in auth and "'hook'" in auth
    assert "SCRAM-SHA-512" in auth and "s3cret-pw" not in auth
    tls = describe_connect_error(ssl.SSLCertVerificationError(1, "verify failed"), c)
    assert "certificate is not trusted" in tls and "HOOKSTREAM_KAFKA_SSL_CAFILE" in tls
    missing = describe_connect_error(FileNotFoundError(2, "No such file", "/x/ca.pem"), c)
    assert missing.startswith("cannot read /x/ca.pem") and "SSL_CAFILE" in missing
    down = describe_connect_error(rd(KafkaError._ALL_BROKERS_DOWN), c)
    assert "bootstrap list b-1:9096,b-2:9096" in down
    assert "\n" not in auth + tls + down


def test_per_record_errors_are_told_from_connection_errors() -> None:
    assert is_record_error(aio_errors.MessageSizeTooLargeError())
    assert is_record_error(aio_errors.RecordTooLargeError())
    assert is_record_error(rd(KafkaError.MSG_SIZE_TOO_LARGE))
    assert is_record_error(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert not is_record_error(aio_errors.KafkaConnectionError())
    assert not is_record_error(aio_errors.NotLeaderForPartitionError())
    assert not is_record_error(rd(KafkaError._MSG_TIMED_OUT))
    assert not is_record_error(rd(KafkaError._TRANSPORT))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nobody listens there


async def test_an_unreachable_bootstrap_list_is_said_once_and_readiness_names_it(
        caplog: pytest.LogCaptureFixture) -> None:
    ports = (_closed_port(), _closed_port())
    c = KafkaConnection(bootstrap=f"127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}")
    gate = ConnectGate(c, "the test service", first_delay=0.05, max_delay=0.1)
    caplog.set_level(logging.DEBUG)
    task = asyncio.create_task(gate.wait())
    await asyncio.sleep(1.0)  # several attempts
    assert not task.done()
    task.cancel()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert lines[0].startswith("the test service cannot connect to Kafka: no broker of the "
                               f"bootstrap list 127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}")
    assert gate.checks() == {"kafka": False}
    assert "127.0.0.1:" in gate.why()["kafka"]
