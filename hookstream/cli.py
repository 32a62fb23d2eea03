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
from hookstream.local.kafka import KafkaLaunchError, LocalKafka, answers_metadata

app = typer.Typer(no_args_is_help=True, help="hookstream: incoming webhooks to survey invitations "
                  "on Apache Kafka.")
kafka_app = typer.Typer(no_args_is_help=True, help="The local single-node Kafka broker (KRaft).")
app.add_typer(kafka_app, name="kafka")

# Each area contributes its own commands: `register(app)` in its cli module adds them.
for _area in (control_plane.cli, ingress.cli, streams.cli, notifier.cli, ops.cli, hookstream.up):
    _area.register(app)


def _local_kafka(port: int | None, data_dir: Path | None) -> LocalKafka:
    s = get_settings()
    return LocalKafka(data_dir or s.var_dir / "kafka", port=port or s.kafka_port,
                      controller_port=s.kafka_controller_port if port is None else port + 1)


@kafka_app.command("start")
def kafka_start(
    port: int | None = typer.Option(None, help="Broker port (default HOOKSTREAM_KAFKA_PORT)"),
    data_dir: Path | None = typer.Option(None, help="Data directory (default var/kafka)"),
) -> None:
    """Fetch Kafka with Maven (cached), format storage, start the broker, wait until ready."""
    import time

    kafka = _local_kafka(port, data_dir)
    already = kafka.state()
    t0 = time.monotonic()
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


@kafka_app.command("stop")
def kafka_stop(
    port: int | None = typer.Option(None), data_dir: Path | None = typer.Option(None),
) -> None:
    """Stop the local broker cleanly (controlled shutdown)."""
    if _local_kafka(port, data_dir).stop():
        typer.echo("stopped")
    else:
        typer.echo("not running")


@kafka_app.command("status")
def kafka_status(
    port: int | None = typer.Option(None), data_dir: Path | None = typer.Option(None),
) -> None:
    """Whether the local broker runs, its version and its address (exit 1 if not running)."""
    import asyncio

    st = _local_kafka(port, data_dir).state()
    if st is None:
        typer.echo("not running")
        raise typer.Exit(1)
    answering = asyncio.run(answers_metadata(st.bootstrap))
    typer.echo(f"running: Apache Kafka {st.version} at {st.bootstrap} (pid {st.pid}), "
               f"{'answering' if answering else 'NOT answering'} metadata requests")
    if not answering:
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

    from core.kafka.plan import TopicError, apply_plan, plan_from_settings

    s = get_settings()
    try:
        report = asyncio.run(apply_plan(s.kafka_bootstrap, plan_from_settings(s),
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
