"""Operator and data-engineer commands: `hookstream lag`, `tap` and `dlq replay`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from core.kafka.clients import KafkaConnection
from core.kafka.headers import DLQ_REASON, RECORD_INDEX, header, text
from core.kafka.lag import LagReader, LagReport
from core.kafka.topics import Topics
from core.settings import get_settings
from ops.dlq import ReplayFilter, replay
from ops.reading import ReadError, parse_from, resolve_topic
from ops.tap import AvroFileSink, JsonLinesSink, TapResult, avro_schema_for, tap

EXIT_LAG_EXCEEDED = 2
EXIT_ERROR = 1

dlq_app = typer.Typer(no_args_is_help=True, help="The dead-letter topic (webhooks.dlq).")

BOOTSTRAP_OPT = typer.Option(None, "--bootstrap", help="Kafka bootstrap servers "
                             "(default HOOKSTREAM_KAFKA_BOOTSTRAP)")
PREFIX_OPT = typer.Option(None, "--prefix", help="Topic prefix (default HOOKSTREAM_TOPIC_PREFIX)")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(EXIT_ERROR)


def _conn(bootstrap: str | None, prefix: str | None) -> tuple[KafkaConnection, str]:
    """The settings' connection (its security too), on --bootstrap when given."""
    s = get_settings()
    conn = KafkaConnection.from_settings(s)
    if bootstrap:
        conn = conn.with_bootstrap(bootstrap)
    return conn, s.topic_prefix if prefix is None else prefix


def format_lag_table(report: LagReport, max_lag: int | None = None) -> str:
    if not report.partitions:
        return "no consumer groups with committed offsets on these topics"
    header = ("GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG")
    rows = [(p.group, p.topic, str(p.partition), "-" if p.committed is None else str(p.committed),
             str(p.end), str(p.lag) + (" !" if max_lag is not None and p.lag > max_lag else ""))
            for p in report.partitions]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {2, 3, 4, 5}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    out = [line(header), *(line(r) for r in rows), ""]
    for g in report.groups:
        out.append(f"group {g.group}: lag {g.lag} ({g.state}, {g.members} member"
                   f"{'' if g.members == 1 else 's'})")
    out.append(f"total lag: {report.total}   max partition lag: {report.max_lag}")
    return "\n".join(out)


def lag_command(
    group: list[str] = typer.Option([], "--group", "-g", help="Only this group (repeatable)"),
    all_groups: bool = typer.Option(False, "--all", help="Every group and topic, not only the "
                                    "topics under the prefix"),
    as_json: bool = typer.Option(False, "--json", help="One JSON document (per refresh)"),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until Ctrl-C"),
    interval: float = typer.Option(2.0, "--interval", "-n", min=0.1,
                                   help="Seconds between refreshes with --watch"),
    times: int | None = typer.Option(None, "--times", min=1,
                                     help="With --watch: stop after this many refreshes"),
    max_lag: int | None = typer.Option(None, "--max-lag", min=0, help="Exit with status 2 when "
                                       "any partition's lag exceeds this (an alert check)"),
    bootstrap: str | None = BOOTSTRAP_OPT,
    prefix: str | None = PREFIX_OPT,
) -> None:
    """Consumer group lag per topic and partition: committed offset, end offset, lag, totals."""
    server, topic_prefix = _conn(bootstrap, prefix)
    exceeded = asyncio.run(_lag(server, None if all_groups else topic_prefix, group or None,
                                as_json, watch, interval, times, max_lag))
    if exceeded:
        raise typer.Exit(EXIT_LAG_EXCEEDED)


async def _lag(server: KafkaConnection, prefix: str | None, groups: list[str] | None, as_json: bool,
               watch: bool, interval: float, times: int | None, max_lag: int | None) -> bool:
    exceeded = False
    rounds = 0
    try:
        async with LagReader(server) as reader:
            while True:
                report = await reader.read(prefix, groups)
                exceeded = max_lag is not None and report.max_lag > max_lag
                rounds += 1
                if as_json:
                    doc = report.to_json()
                    if max_lag is not None:
                        doc["max_lag_threshold"], doc["exceeded"] = max_lag, exceeded
                    typer.echo(json.dumps(doc))
                else:
                    if watch and sys.stdout.isatty():
                        typer.echo("\x1b[2J\x1b[H", nl=False)  # clear the screen between frames
                    if watch:
                        typer.echo(datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
                    typer.echo(format_lag_table(report, max_lag))
                    if exceeded:
                        typer.echo(f"LAG ABOVE {max_lag}")
                if not watch or (times is not None and rounds >= times):
                    return exceeded
                await asyncio.sleep(interval)
    except KafkaError as exc:
        raise _fail(f"cannot read consumer lag from Kafka at {server}: {exc!r}") from exc


def tap_command(
    topic: str = typer.Argument(..., help="A hookstream topic name without the prefix "
                                "(invitations.due, webhooks.dlq, ...) or a full topic name"),
    from_: str = typer.Option("beginning", "--from", help="beginning, end, or an ISO-8601 "
                              "timestamp (UTC when no offset is given)"),
    key: str | None = typer.Option(None, "--key", help="Only records with this key"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep reading new records"),
    max_records: int | None = typer.Option(None, "--max", min=0, help="Stop after N records"),
    out: Path | None = typer.Option(None, "--out", help="Write an Avro Object Container File "
                                    "instead of JSON lines (Avro topics only)"),
    bootstrap: str | None = BOOTSTRAP_OPT,
    prefix: str | None = PREFIX_OPT,
) -> None:
    """Read a topic: decoded records as JSON lines on stdout, or an Avro file with --out."""
    server, topic_prefix = _conn(bootstrap, prefix)
    full, short = resolve_topic(topic, topic_prefix)
    try:
        start = parse_from(from_)
        sink: JsonLinesSink | AvroFileSink
        schema = ""
        if out is not None:
            schema = avro_schema_for(full, short)
            sink = AvroFileSink(out, schema, full)
        else:
            sink = JsonLinesSink(sys.stdout, short)
    except ReadError as exc:
        raise _fail(str(exc)) from exc
    t0 = time.monotonic()
    result = TapResult()
    try:
        asyncio.run(tap(server, full, short, start, sink, key=key, follow=follow,
                        max_records=max_records, result=result))
    except (ReadError, KafkaError) as exc:
        sink.close()
        if out is not None:
            out.unlink(missing_ok=True)  # no half-written file that looks like a result
        why = str(exc) if isinstance(exc, ReadError) else \
            f"cannot read {full} from Kafka at {server}: {exc!r}"
        raise _fail(why) from exc
    except KeyboardInterrupt:
        pass  # Ctrl-C ends --follow; the file below is still closed whole
    except BrokenPipeError:
        # The reader went away (`| head`): a normal end. Point stdout at /dev/null so the
        # interpreter's final flush does not complain about the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    finally:
        try:
            sink.close()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if out is not None:
        skipped = f", {result.skipped} left out (see log)" if result.skipped else ""
        typer.echo(f"wrote {result.written} {schema} records from {full} to {out} "
                   f"in {time.monotonic() - t0:.1f}s{skipped}", err=True)


@dlq_app.command("replay")
def dlq_replay_command(
    automation: str | None = typer.Option(None, "--automation", help="Only this automation id"),
    reason: list[str] = typer.Option([], "--reason", help="Only this dlq-reason code "
                                     "(repeatable), e.g. missing_email"),
    since: str | None = typer.Option(None, "--since", help="Only records that failed at or "
                                     "after this ISO-8601 time"),
    until: str | None = typer.Option(None, "--until", help="Only records that failed before "
                                     "this ISO-8601 time"),
    dry_run: bool = typer.Option(False, "--dry-run", help="List and count, publish nothing"),
    as_json: bool = typer.Option(False, "--json", help="The summary as one JSON document"),
    bootstrap: str | None = BOOTSTRAP_OPT,
    prefix: str | None = PREFIX_OPT,
) -> None:
    """Re-publish dead-letter records to webhooks.raw once their cause is fixed.

    Replaying twice is safe: invitation ids derive from (automation, request id, record
    index), so a record that already produced an invitation produces no second one.
    """
    server, topic_prefix = _conn(bootstrap, prefix)
    topics = Topics(topic_prefix)
    try:
        selection = ReplayFilter(
            automation=automation, reasons=frozenset(reason),
            since_ms=_time_ms(since, "--since"), until_ms=_time_ms(until, "--until"))
    except ReadError as exc:
        raise _fail(str(exc)) from exc

    def show(record: ConsumerRecord, headers: list[tuple[str, bytes]]) -> None:
        reason = text(header(record.headers, DLQ_REASON)) or "?"
        key = text(record.key) or ""
        index = text(header(headers, RECORD_INDEX)) or "-"
        typer.echo(f"would replay partition {record.partition} offset {record.offset} "
                   f"automation {key} reason {reason} record-index {index}")

    try:
        result = asyncio.run(replay(server, topics.dlq, topics.raw, selection, dry_run=dry_run,
                                    on_record=show if dry_run and not as_json else None))
    except ReadError as exc:
        raise _fail(str(exc)) from exc
    except KafkaError as exc:
        raise _fail(f"replay to {topics.raw} failed (records sent before the error are on the "
                    f"topic; a rerun is safe): {exc!r}") from exc
    if as_json:
        doc = result.to_json()
        doc["dry_run"] = dry_run
        typer.echo(json.dumps(doc))
        return
    verb = "would replay" if dry_run else "replayed"
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(result.by_reason.items()))
    typer.echo(f"{verb} {result.replayed} of {result.scanned} dead-letter records"
               f"{'' if dry_run else ' to ' + topics.raw}" + (f" ({reasons})" if reasons else ""))


def _time_ms(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    parsed = parse_from(value) if value not in ("beginning", "end") else None
    if not isinstance(parsed, int):
        raise ReadError(f"{option} must be an ISO-8601 timestamp, not {value!r}")
    return parsed


def register(app: typer.Typer) -> None:
    app.command("lag")(lag_command)
    app.command("tap")(tap_command)
    app.add_typer(dlq_app, name="dlq")
