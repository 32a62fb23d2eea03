"""The `hookstream` command line: one entry point for every service and operator tool."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

import control_plane.cli
import hookstream.up
import ingress.cli
import notifier.cli
import ops.cli
import streams.cli
from core.settings import get_settings
from hookstream.local.kafka import (
    SECURITY_CHOICES,
    KafkaLaunchError,
    LocalKafka,
    LocalKafkaCluster,
    answers_metadata,
)

app = typer.Typer(no_args_is_help=True, help="hookstream: incoming webhooks to survey invitations "
                  "on Apache Kafka.")
kafka_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (KRaft): one node, "
                        "or a cluster of them with `start --brokers 3`.")
app.add_typer(kafka_app, name="kafka")

# Each area contributes its own commands: `register(app)` in its cli module adds them.
for _area in (control_plane.cli, ingress.cli, streams.cli, notifier.cli, ops.cli, hookstream.up):
    _area.register(app)


def _local_kafka(port: int | None, data_dir: Path | None) -> LocalKafka:
    s = get_settings()
    return LocalKafka(data_dir or s.var_dir / "kafka", port=port or s.kafka_port,
                      controller_port=s.kafka_controller_port if port is None else port + 1)


def _local_cluster(port: int | None, data_dir: Path | None, brokers: int = 3,
                   security: str = "plaintext", quick_jvm: bool = False) -> LocalKafkaCluster:
    s = get_settings()
    return LocalKafkaCluster(data_dir or s.var_dir / "kafka", brokers=brokers,
                             port=port or s.kafka_port, security=security, quick_jvm=quick_jvm)


def _is_cluster(data_dir: Path | None) -> bool:
    return LocalKafkaCluster.recorded_in(data_dir or get_settings().var_dir / "kafka")


def _env_lines(cluster: LocalKafkaCluster) -> list[str]:
    import shlex

    return [f"{k}={shlex.quote(v)}" for k, v in cluster.client.env().items()]


@kafka_app.command("start")
def kafka_start(
    port: int | None = typer.Option(None, help="Broker port (default HOOKSTREAM_KAFKA_PORT); "
                                    "a cluster's nodes use it and the ports after it"),
    data_dir: Path | None = typer.Option(None, help="Data directory (default var/kafka)"),
    brokers: int | None = typer.Option(None, min=1, max=9, help="Number of nodes (each a "
                                       "broker and a KRaft controller; default 1, or what the "
                                       "data directory holds); 3 gives RF 3, min ISR 2"),
    security: str | None = typer.Option(None, help="Client listener: plaintext (default), or "
                                        "sasl_ssl (SCRAM users and TLS certificates made by "
                                        "the launcher)"),
    quick_jvm: bool = typer.Option(False, help="Cluster nodes without the optimising JIT: "
                                   "half the CPU to start, less peak throughput (tests)"),
) -> None:
    """Fetch Kafka with Maven (cached), format storage, start the broker(s), wait until ready."""
    import time

    if security is not None and security not in SECURITY_CHOICES:
        typer.secho(f"error: --security must be one of {', '.join(SECURITY_CHOICES)}",
                    fg="red", err=True)
        raise typer.Exit(2)
    t0 = time.monotonic()
    if (brokers or 1) > 1 or (security or "plaintext") != "plaintext" or _is_cluster(data_dir):
        _cluster_start(port, data_dir, brokers, security, quick_jvm)
        return
    kafka = _local_kafka(port, data_dir)
    already = kafka.state()
    try:
        st = kafka.start()
    except KafkaLaunchError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    if already:
        typer.echo(f"Apache Kafka {st.version} already running at {st.bootstrap} (pid {st.pid})")
    else:
        typer.echo(f"Apache Kafka {st.version} ready at {st.bootstrap} (pid {st.pid}) "
                   f"in {time.monotonic() - t0:.1f}s")


def _cluster_start(port: int | None, data_dir: Path | None, brokers: int | None,
                   security: str | None, quick_jvm: bool) -> None:
    import time

    t0 = time.monotonic()
    try:
        if (data_dir or get_settings().var_dir / "kafka").joinpath("state.json").exists():
            raise KafkaLaunchError("a single-node broker is recorded in this data directory; "
                                   "stop it and choose another --data-dir for a cluster")
        cluster = _local_cluster(port, data_dir, brokers or 1, security or "plaintext",
                                 quick_jvm)
        # A recorded cluster starts as it was made; asking for another shape is a mistake.
        if brokers not in (None, cluster.brokers) or security not in (None, cluster.security):
            raise KafkaLaunchError(
                f"{cluster.data_dir} holds a {cluster.brokers}-node {cluster.security} "
                "cluster; start it with those options, or choose another --data-dir")
        already = all(cluster.state().values())
        cluster.start()
    except KafkaLaunchError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    for node_id, st in cluster.state().items():
        assert st is not None  # start() waited until every node was listed
        typer.echo(f"node {node_id}: Apache Kafka {st.version} at {st.bootstrap} (pid {st.pid})")
    typer.echo(f"{cluster.brokers}-node {cluster.security} cluster "
               f"{'already running' if already else 'ready'}"
               f"{'' if already else f' in {time.monotonic() - t0:.1f}s'}; client settings "
               f"(also in {cluster.client_file}):")
    for line in _env_lines(cluster):
        typer.echo(line)


@kafka_app.command("stop")
def kafka_stop(
    port: int | None = typer.Option(None), data_dir: Path | None = typer.Option(None),
) -> None:
    """Stop the local broker, or every node of the local cluster, by pid (controlled
    shutdown; SIGKILL for a node that hangs)."""
    try:
        kafka = _local_cluster(port, data_dir) if _is_cluster(data_dir) else \
            _local_kafka(port, data_dir)
        stopped = kafka.stop()
    except KafkaLaunchError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    typer.echo("stopped" if stopped else "not running")


@kafka_app.command("status")
def kafka_status(
    port: int | None = typer.Option(None), data_dir: Path | None = typer.Option(None),
    env: bool = typer.Option(False, "--env", help="Print only the client settings, as "
                             "HOOKSTREAM_KAFKA_* lines (for a .env file or `export`)"),
) -> None:
    """Whether the local broker (or each node of the cluster) runs, its version and address,
    and the client settings (exit 1 if not running, 2 if not answering or a node is down)."""
    import asyncio

    if _is_cluster(data_dir):
        _cluster_status(port, data_dir, env)
        return
    st = _local_kafka(port, data_dir).state()
    if env:
        if st is None:
            raise typer.Exit(1)
        typer.echo(f"HOOKSTREAM_KAFKA_BOOTSTRAP={st.bootstrap}")
        return
    if st is None:
        typer.echo("not running")
        raise typer.Exit(1)
    answering = asyncio.run(answers_metadata(st.bootstrap))
    typer.echo(f"running: Apache Kafka {st.version} at {st.bootstrap} (pid {st.pid}), "
               f"{'answering' if answering else 'NOT answering'} metadata requests")
    if not answering:
        raise typer.Exit(2)


def _cluster_status(port: int | None, data_dir: Path | None, env: bool) -> None:
    import asyncio

    from hookstream.local.kafka import live_brokers

    try:
        cluster = _local_cluster(port, data_dir)
    except KafkaLaunchError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    states = cluster.state()
    running = [st for st in states.values() if st is not None]
    if env:
        for line in _env_lines(cluster):
            typer.echo(line)
        raise typer.Exit(0 if running else 1)
    if not running:
        typer.echo("not running")
        raise typer.Exit(1)
    listed = asyncio.run(live_brokers(cluster.bootstrap, 5.0, cluster.admin))
    for node_id, st in states.items():
        typer.echo(f"node {node_id}: " + (f"running: Apache Kafka {st.version} at "
                                          f"{st.bootstrap} (pid {st.pid})" if st else "down"))
    typer.echo(f"{len(running)} of {cluster.brokers} nodes running, {listed} listed in the "
               f"cluster's metadata ({cluster.security}); client settings:")
    for line in _env_lines(cluster):
        typer.echo(line)
    if len(running) < cluster.brokers or listed < cluster.brokers:
        raise typer.Exit(2)


# --- the topic plan (core/kafka/plan.py) ------------------------------------------------------

topics_app = typer.Typer(no_args_is_help=True, help="The pipeline's topics: the plan from the "
                         "settings, and applying it to the cluster.")
app.add_typer(topics_app, name="topics")
EXIT_DRIFT = 2


@topics_app.command("plan")
def topics_plan(
    as_json: bool = typer.Option(False, "--json", help="The plan as one JSON document"),
) -> None:
    """Every topic with its partitions, replication factor, cleanup policy, retention,
    min.insync.replicas and max.message.bytes, from the HOOKSTREAM_* settings."""
    import json

    from core.kafka.plan import format_plan, plan_from_settings

    try:
        plan = plan_from_settings(get_settings())
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps({"topics": [t.to_json() for t in plan]}, indent=2))
        return
    typer.echo(format_plan(plan))
    typer.echo("")
    for t in plan:
        typer.echo(f"{t.name}: {t.why}")


@topics_app.command("apply")
def topics_apply(
    fix_configs: bool = typer.Option(False, "--fix-configs", help="Alter the configs of "
                                     "existing topics that differ from the plan (partitions "
                                     "and replication are only reported)"),
    as_json: bool = typer.Option(False, "--json", help="The report as one JSON document"),
) -> None:
    """Create the plan's missing topics and report drift on existing ones (exit 2 while any
    remains). Creates even when HOOKSTREAM_KAFKA_CREATE_TOPICS is off: that switch is for
    the services."""
    import asyncio
    import json

    from aiokafka.errors import KafkaError

    from core.kafka.clients import KafkaConnection
    from core.kafka.plan import TopicError, apply_plan, plan_from_settings

    s = get_settings()
    try:
        report = asyncio.run(apply_plan(KafkaConnection.from_settings(s), plan_from_settings(s),
                                        fix_configs=fix_configs))
    except (ValueError, TopicError, KafkaError, OSError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for name in report.created:
            typer.echo(f"created {name}")
        for d in report.fixed:
            typer.echo(f"fixed   {d}")
        for d in report.drift:
            hint = "" if d.fixable else " (not changed by hookstream: see docs/DEPLOY.md)"
            typer.echo(f"drift   {d}{hint}")
        if report.unchecked:
            typer.secho(f"error: cannot read the topics' configs: {report.unchecked}",
                        fg="red", err=True)
        elif not (report.created or report.fixed or report.drift):
            typer.echo("every topic is as planned")
    if report.unchecked:
        raise typer.Exit(1)
    if report.drift:
        raise typer.Exit(EXIT_DRIFT)


# --- local development tools (hookstream/local/) --------------------------------------------

@app.command("smtp-sink")
def smtp_sink(
    folder: Path = typer.Option(Path("var/mail"), "--dir", help="Where .eml files go"),
    host: str = typer.Option("127.0.0.1", help="Address to listen on"),
    port: int | None = typer.Option(None, help="Port (default: the port of "
                                    "HOOKSTREAM_SMTP_URL, 8025 out of the box)"),
) -> None:
    """A local SMTP server that writes every mail it receives as an .eml file."""
    import signal
    import threading

    from hookstream.local.smtp_sink import SmtpSink
    from notifier.smtp_config import SmtpConfig

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every command at INFO, recipients' addresses included: personal data
    # in a log, and a tenth of the sink's CPU per mail (py-spy). The .eml files are the
    # record; warnings still show.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    if port is None:
        port = SmtpConfig.from_url(get_settings().smtp_url.get_secret_value()).port
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sink = SmtpSink(folder, host=host, port=port).start()
    typer.echo(f"SMTP sink on {host}:{port}, writing to {folder}/ (Ctrl-C stops)", err=True)
    try:
        while not stop.wait(0.5):  # a timed wait lets the signal handlers run
            pass
    finally:
        sink.stop()


if __name__ == "__main__":
    app()
