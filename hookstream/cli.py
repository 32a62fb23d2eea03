"""The `hookstream` command line: one entry point for every service and operator tool."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from core.settings import get_settings
from hookstream.local.kafka import KafkaLaunchError, LocalKafka, answers_metadata

app = typer.Typer(no_args_is_help=True, help="hookstream: incoming webhooks to survey invitations "
                  "on Apache Kafka.")
kafka_app = typer.Typer(no_args_is_help=True, help="The local single-node Kafka broker (KRaft).")
app.add_typer(kafka_app, name="kafka")

# Each area contributes its own commands; `register(app)` in its cli module adds them.
AREA_CLIS = ("control_plane.cli", "ingress.cli", "streams.cli", "notifier.cli", "ops.cli",
             "hookstream.up")
for _module in AREA_CLIS:
    importlib.import_module(_module).register(app)


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


if __name__ == "__main__":
    app()
