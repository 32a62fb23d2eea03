"""Streams benchmark (`make bench-streams`).

N records (default 200,000) of a realistic automation (10 fields, 3 filter conditions, 6
mappings) from `webhooks.raw` to `invitations.due`, one record per webhook (the worst case:
one Kafka message each), pre-loaded before the worker starts. Timed from the first to the
last output record (their timestamps), so start-up is not counted.
- streams: the worker (`python -m streams`: Faust worker, transactional exactly-once loop);
- baseline: the same transformation (streams/transform.py) in a plain at-least-once aiokafka
  consume-transform-produce loop, also a subprocess, in the same run.
- streams-regex: the worker again, the automation with a fourth filter condition, a regex on
  the e-mail address (RE2, issue 15; the target is within 10% of the streams line).
Each run uses fresh topics (deleted afterwards). Prints, with medians of RUNS runs:
`streams_eps=… streams_per_cpu_s=… worker_peak_rss_mib=…` (records per CPU second of the
worker: issue 17 compares it with Kafka Streams), `streams_eps=… baseline_eps=… ratio=…`,
then `streams_regex_eps=… streams_eps=… regex_ratio=… streams_regex_per_cpu_s=… …`.
`--kinds streams` runs the worker alone; BENCH_PYSPY=<dir> samples each run with py-spy
(bench/README.md). Uses HOOKSTREAM_KAFKA_BOOTSTRAP if set, else starts (and stops) a local
broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import TopicPartition  # noqa: E402

from automations.snapshot import (  # noqa: E402
    AutomationSnapshot,
    FieldMapping,
    MessageTemplate,
    Variable,
)
from bench.streams_common import WorkerProcess, broker, kafka, replication  # noqa: E402
from core.kafka import clients  # noqa: E402
from core.kafka.topics import Topics, ensure_topics  # noqa: E402
from schemas import codec  # noqa: E402

AUTOMATION = "bench-automation"
KINDS = ("streams", "baseline", "streams-regex")
# The regex line's extra condition: every bench record matches it, so the work is the same.
REGEX_CONDITION = {"field": "email", "op": "regex", "value": r"^respondent\d+@example\.com$"}


def automation(regex: bool = False) -> AutomationSnapshot:
    snap = AutomationSnapshot(
        id=AUTOMATION, version=1, name="Bench", survey_id="survey-bench",
        survey_name="Bench survey", enabled=True,
        message=MessageTemplate("m", "Invite", "Hi {{ name }}", "Dear {{ name }}"),
        variables=(Variable("name", "text"), Variable("age", "number"), Variable("city", "text"),
                   Variable("member", "boolean"), Variable("signup", "date"),
                   Variable("total", "number")),
        email_field="email", fields_mode="exclude", fields_paths=("internal_id",),
        filters={"all": [{"field": "country", "op": "eq", "value": "NL"},
                         {"field": "age", "op": "gte", "value": 18},
                         {"field": "plan", "op": "in", "value": ["pro", "basic"]}]},
        mapping=(FieldMapping("first_name", "name"), FieldMapping("age", "age"),
                 FieldMapping("city", "city"), FieldMapping("member", "member"),
                 FieldMapping("signup_date", "signup"), FieldMapping("order.total", "total"),
                 FieldMapping("last_name", None)),
        delay_days=0, error_notifications_enabled=False, error_recipients=(), api_keys=(),
        updated_at=datetime.now(UTC))
    if regex:
        assert snap.filters is not None
        snap = replace(snap, filters={"all": [*snap.filters["all"], REGEX_CONDITION]})
    return snap


def body(i: int) -> bytes:
    return orjson.dumps({
        "email": f"respondent{i}@example.com", "first_name": f"First{i}",
        "last_name": f"Last{i}", "age": 18 + i % 60, "city": "Utrecht", "country": "NL",
        "member": i % 2 == 0, "signup_date": "2026-03-14", "plan": "pro" if i % 3 else "basic",
        "order": {"total": 10 + i % 90, "currency": "EUR"}, "internal_id": i})


async def prepare(bootstrap: str, prefix: str, n: int, regex: bool = False) -> Topics:
    topics = Topics(prefix)
    await ensure_topics(kafka(bootstrap), topics, 3, **replication())
    producer = clients.producer(kafka(bootstrap), acks="all", linger_ms=20,
                                max_batch_size=256 * 1024, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topics.config, codec.encode(
            "AutomationSnapshot", automation(regex).to_record()), key=AUTOMATION.encode())
        now = str(int(time.time() * 1000)).encode()
        key = AUTOMATION.encode()
        for i in range(n):
            await producer.send(topics.raw, body(i), key=key, headers=[
                ("content-type", b"application/json"), ("received-at", now),
                ("request-id", f"bench-{i}".encode())])
        await producer.flush()
    finally:
        await producer.stop()
    return topics


async def wait_outputs(bootstrap: str, topic: str, n: int, timeout: float,
                       proc: WorkerProcess) -> tuple[int, float, float]:
    """(records, seconds from the first to the last output, the process's CPU seconds from
    its first output to its last) once `n` are committed."""
    consumer = clients.consumer(kafka(bootstrap), isolation_level="read_committed",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        deadline = time.monotonic() + timeout
        cpu_start: float | None = None
        while (done := sum((await consumer.end_offsets(tps)).values())) < n:  # offsets only
            if cpu_start is None and done > 0:
                cpu_start = proc.cpu_seconds()
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n} outputs on {topic} after {timeout}s")
            await asyncio.sleep(0.05 if cpu_start is None else 0.5)
        cpu = proc.cpu_seconds() - (cpu_start or 0.0)
        count, first, last = 0, None, None
        await consumer.seek_to_beginning(*tps)
        while count < n and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500, max_records=20000)).values():
                count += len(batch)
                ts = [r.timestamp for r in batch]
                first = min(ts) if first is None else min(first, *ts)
                last = max(ts) if last is None else max(last, *ts)
        if count < n or first is None or last is None:
            raise TimeoutError(f"only {count} of {n} outputs committed on {topic}")
        return count, (last - first) / 1000.0, cpu
    finally:
        await consumer.stop()


async def delete_topics(bootstrap: str, topics: Topics) -> None:
    admin = clients.admin(kafka(bootstrap))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = [t for t in existing if t.startswith(topics.prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def one_run(bootstrap: str, n: int, kind: str, tmp: Path) -> tuple[float, int, float]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topics = await prepare(bootstrap, prefix, n, regex=kind == "streams-regex")
    profile = ("-m", "cProfile", "-o", str(tmp / f"{kind}.prof")) \
        if os.environ.get("BENCH_PROFILE") else ()
    command = (*profile, "-m", "streams", "--loglevel", "warn") if kind != "baseline" else \
        (str(Path(__file__).resolve()), "--baseline-child")
    proc = WorkerProcess(bootstrap, prefix, tmp / prefix, command=command, name=kind)
    proc.start()
    spy = pyspy(proc, kind)
    try:
        count, seconds, cpu = await wait_outputs(bootstrap, topics.due, n, 600, proc)
        rss = proc.rss_kib()
    finally:
        if spy is not None and spy.poll() is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            spy.wait(60)
        proc.stop()
        await delete_topics(bootstrap, topics)
    eps = count / seconds if seconds > 0 else float("inf")
    # On a shared machine the process may not get a whole core: records per CPU second
    # says what one busy core does, whatever the neighbours take.
    print(f"  {kind}: {count} records in {seconds:.2f}s = {eps:,.0f}/s, {cpu:.1f} CPU-s "
          f"({count / max(cpu, 1e-9):,.0f} per CPU-s), peak RSS {rss / 1024:.0f} MiB",
          flush=True)
    return eps, rss, count / max(cpu, 1e-9)


def pyspy(proc: WorkerProcess, kind: str) -> subprocess.Popen[bytes] | None:
    """With BENCH_PYSPY=<dir>: py-spy samples the run (attached, non-blocking, so the worker
    is not paused) into <dir>/<kind>-<pid>.txt, collapsed stacks (`flamegraph.pl` or
    speedscope read them; bench/README.md sums them by stage)."""
    out = os.environ.get("BENCH_PYSPY")
    if not out or proc.proc is None:
        return None
    path = Path(out) / f"{kind}-{proc.proc.pid}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking", "-r", "100",
         "-f", "raw", "-o", str(path), "-p", str(proc.proc.pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def baseline_child() -> None:
    """The same transform in a plain at-least-once aiokafka loop (no transactions)."""
    from automations.config_cache import ConfigCache
    from core.settings import get_settings
    from streams.records import RawRecord
    from streams.transform import Transformer

    s = get_settings()
    topics = Topics(s.topic_prefix)
    config = ConfigCache(kafka(s.kafka_bootstrap), topics.config)
    await config.start()
    transformer = Transformer(topics, config.get, s.day_seconds)
    consumer = clients.consumer(kafka(s.kafka_bootstrap), topics.raw,
                                group_id=f"{s.topic_prefix}baseline", enable_auto_commit=False,
                                auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = clients.producer(kafka(s.kafka_bootstrap), acks="all",
                                enable_idempotence=True, linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            for records in batches.values():
                for r in records:
                    for o in transformer.transform(RawRecord(r.key, r.value, r.headers,
                                                             r.partition, r.offset,
                                                             r.timestamp)):
                        await producer.send(o.topic, o.value, key=o.key, headers=o.headers)
            if batches:
                await producer.flush()
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()
        await config.stop()


async def main(n: int, runs: int, kinds: tuple[str, ...] = KINDS) -> None:
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        eps: dict[str, list[float]] = {k: [] for k in kinds}
        per_cpu: dict[str, list[float]] = {k: [] for k in kinds}
        rss: list[int] = []
        for run in range(runs):
            print(f"run {run + 1}/{runs}", flush=True)
            for kind in kinds:
                e, peak, c = await one_run(bootstrap, n, kind, Path(tmp))
                eps[kind].append(e)
                per_cpu[kind].append(c)
                if kind == "streams":
                    rss.append(peak)
        med = {k: statistics.median(v) for k, v in eps.items()}
        cpu = {k: statistics.median(v) for k, v in per_cpu.items()}
        if "streams" in kinds:
            # Records per CPU second: on a shared machine the wall-clock rates swing with the
            # neighbours, what one busy core does per record does not (issue 17 compares it
            # with Kafka Streams: /work/shared/peers, bench/README.md).
            print(f"streams_eps={med['streams']:.0f} streams_per_cpu_s={cpu['streams']:.0f} "
                  f"worker_peak_rss_mib={max(rss) / 1024:.0f} records={n} runs={runs}")
        if "streams" in kinds and "baseline" in kinds:
            s, b = med["streams"], med["baseline"]
            print(f"streams_eps={s:.0f} baseline_eps={b:.0f} ratio={s / b:.2f} "
                  f"worker_peak_rss_mib={max(rss) / 1024:.0f} records={n} runs={runs}")
        if "streams" in kinds and "streams-regex" in kinds:
            s, r, sc, rc = (med["streams"], med["streams-regex"], cpu["streams"],
                            cpu["streams-regex"])
            print(f"streams_regex_eps={r:.0f} streams_eps={s:.0f} regex_ratio={r / s:.2f} "
                  f"streams_regex_per_cpu_s={rc:.0f} streams_per_cpu_s={sc:.0f} "
                  f"regex_cpu_ratio={rc / sc:.2f} records={n} runs={runs}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="which runs, comma-separated (default: all three)")
    parser.add_argument("--baseline-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass  # the default loop: the worker would run on it as well
        asyncio.run(baseline_child())
    else:
        asyncio.run(main(args.records, args.runs, tuple(args.kinds.split(","))))
