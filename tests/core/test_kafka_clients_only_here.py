"""Every Kafka client is built by core/kafka/clients.py, so the HOOKSTREAM_KAFKA_* security
settings reach all of them: no other module of the shipped packages or bench/ constructs an
aiokafka or confluent-kafka client, nor a faust.App with a broker, nor passes a bootstrap
list to a client by itself."""

from __future__ import annotations

import ast

from tests.core.project import REPO, RUNTIME, parse, python_files

THE_MODULE = "core/kafka/clients.py"
CONSTRUCTORS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient",
                "AIOKafkaClient", "Producer", "Consumer", "AdminClient", "SerializingProducer",
                "DeserializingConsumer"}
CLIENT_MODULES = ("aiokafka", "confluent_kafka", "kafka")
# path -> why it may talk to Kafka by itself.
ALLOWED = {
    # The dev launcher asks the broker it just started for metadata (PLAINTEXT, local).
    "hookstream/local/kafka.py": "the local launcher's health check of its own broker",
}


def _from_client_module(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in CLIENT_MODULES


def violations(tree: ast.Module) -> list[str]:
    """What in this module builds a Kafka client itself (line: call)."""
    names: set[str] = set()  # local names of client classes
    modules: set[str] = set()  # local names of client modules (import aiokafka as x)
    fausts: set[str] = set()  # local names of faust, and of faust.App
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                if _from_client_module(node.module) and alias.name in CONSTRUCTORS:
                    names.add(alias.asname or alias.name)
                if node.module == "faust" and alias.name == "App":
                    fausts.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in CLIENT_MODULES:
                    modules.add(alias.asname or top)
                if top == "faust":
                    fausts.add(alias.asname or top)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        text = ast.unparse(f)
        keywords = {k.arg for k in node.keywords}
        if isinstance(f, ast.Name) and f.id in names:
            found.append(f"{node.lineno}: {text}(...)")
        elif isinstance(f, ast.Attribute) and f.attr in CONSTRUCTORS \
                and text.split(".")[0] in modules:
            found.append(f"{node.lineno}: {text}(...)")
        elif "broker" in keywords and (
                (isinstance(f, ast.Name) and f.id in fausts)
                or (isinstance(f, ast.Attribute) and f.attr == "App"
                    and text.split(".")[0] in fausts)):
            found.append(f"{node.lineno}: {text}(broker=...)")
        elif "bootstrap_servers" in keywords:
            found.append(f"{node.lineno}: {text}(bootstrap_servers=...)")
        else:
            for arg in node.args:
                if isinstance(arg, ast.Dict) and any(
                        isinstance(k, ast.Constant) and k.value == "bootstrap.servers"
                        for k in arg.keys):
                    found.append(f"{node.lineno}: {text}({{'bootstrap.servers': ...}})")
    return found


def test_every_kafka_client_is_built_by_the_one_module() -> None:
    offenders = {}
    for path in python_files([*RUNTIME, "bench"]):
        rel = path.relative_to(REPO).as_posix()
        if rel == THE_MODULE or rel in ALLOWED:
            continue
        if found := violations(parse(path)):
            offenders[rel] = found
    assert not offenders, (
        "build Kafka clients through core.kafka.clients (producer/consumer/admin/"
        f"rdkafka_producer/faust_app), so TLS and SASL reach them: {offenders}")


def test_the_module_exists_and_the_allowed_files_still_need_it() -> None:
    assert (REPO / THE_MODULE).is_file()
    for rel in ALLOWED:
        assert violations(parse(REPO / rel)), f"{rel} builds no client any more: drop it"


def test_the_check_catches_each_way_of_building_a_client() -> None:
    """The detector itself: each of these is found, the factories are not."""
    source = """
import faust
import confluent_kafka as ck
from aiokafka import AIOKafkaProducer as P
from aiokafka.admin import AIOKafkaAdminClient
from confluent_kafka import Producer
from notifier.admin_client import AdminClient
P(bootstrap_servers=b)
AIOKafkaAdminClient()
Producer({"bootstrap.servers": b})
ck.Consumer({})
faust.App("x", broker="kafka://a:1")
something(bootstrap_servers="a:1")
AdminClient("http://admin", "token")
faust.App("x")
clients.producer(conn, acks="all")
"""
    found = violations(ast.parse(source))
    assert [line.split(":")[0] for line in found] == ["8", "9", "10", "11", "12", "13"], found


def test_production_code_takes_the_connection_not_the_bare_bootstrap() -> None:
    """`settings.kafka_bootstrap` alone loses the security settings: services build a
    KafkaConnection (core.kafka.clients.KafkaConnection.from_settings)."""
    readers = []
    for path in python_files(RUNTIME):
        rel = path.relative_to(REPO).as_posix()
        if rel in (THE_MODULE, "core/settings.py"):
            continue
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Attribute) and node.attr == "kafka_bootstrap":
                readers.append(f"{rel}:{node.lineno}")
    assert not readers, readers
