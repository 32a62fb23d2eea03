"""End-to-end latency: ingress 202 -> SMTP server accepts the mail (used by bench/notifier.py).

Runs admin API, ingress, streams worker and notifier as subprocesses (`hookstream ...`, as in
production) on a fresh topic prefix and SQLite file, an SMTP server in this process that
notes when it accepted each mail (by Message-ID, which carries the invitation id), and posts
single-respondent webhooks at a fixed rate with delay 0.

BENCH_PYSPY=<dir> samples the services named in BENCH_PYSPY_SERVICES (default `notifier`;
comma-separated: ingress, worker, notifier, smtp-sink) with py-spy during the load (`record
--nonblocking --gil`, collapsed stacks into <dir>/<service>.txt; bench/ingress_profile.py's
`summarise` reads them).

With HOOKSTREAM_KAFKA_BOOTSTRAP naming a running broker (a warm one: a fresh broker's JVM
compiles and loads classes through the first minutes, about half a core, which the figures
would otherwise carry), BENCH_BROKER_PID=<its pid> adds its CPU per webhook to the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from automations.ids import invitation_id  # noqa: E402
from hookstream.local.kafka import free_port, named_or_scratch_broker  # noqa: E402

TOKEN = "bench-admin-token"
_MSGID = re.compile(rb"^([0-9a-f-]{36})\.invitation@", re.I)


class Accepted:
    """Invitation id -> the time the SMTP server accepted its mail. The server
    (bench/notifier_sink.py: aiosmtpd, its own process, so this one's load cannot skew its
    clock readings) appends `<epoch ns> <Message-ID>` per accepted mail to one file; the
    Message-ID carries the invitation id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.at: dict[str, float] = {}
        self._read = 0

    def scan(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self._read)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a line being written stays for the next scan
        self._read += end
        for line in data[:end].splitlines():
            at, _, mid = line.partition(b" ")
            m = _MSGID.match(mid)
            if m:
                self.at.setdefault(m.group(1).decode(), int(at) / 1e9)


def _spawn(name: str, args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen:
    out = (logs / f"{name}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "hookstream.cli", *args], cwd=ROOT, env=env,
                            stdout=out, stderr=subprocess.STDOUT)


# The pipeline's stages in order (issue 17): ingress's publish (send -> acks=all), the worker's
# wait on webhooks.raw, transform and transaction, the scheduler's (delayed invitations only),
# the notifier's wait on invitations.due, SQL claim and SMTP send. hookstream_stage_seconds in
# the worker and the notifier, hookstream_ingress_publish_seconds in the ingress.
STAGES = ("ingress_publish", "raw_wait", "transform", "raw_commit", "scheduled_wait",
          "schedule", "scheduled_commit", "due_wait", "claim", "smtp")


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """histogram_quantile as Prometheus computes it: linear within the bucket."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    rank = q * total
    lower_le, lower_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return lower_le  # beyond the last finite bucket: its bound
            return lower_le + (le - lower_le) * (rank - lower_n) / max(n - lower_n, 1e-9)
        lower_le, lower_n = le, n
    return buckets[-1][0]


Histograms = dict[str, list[tuple[float, float]]]


def stage_histograms(metrics_urls: list[str]) -> Histograms:
    """stage -> cumulative (le, count) buckets, scraped from the services' /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[float, float]]] = {}
    for url in metrics_urls:
        text = httpx.get(url, timeout=5).text
        for family in text_string_to_metric_families(text):
            if family.name not in ("hookstream_stage_seconds",
                                   "hookstream_ingress_publish_seconds"):
                continue
            for sample in family.samples:
                if not sample.name.endswith("_bucket"):
                    continue
                stage = sample.labels.get("stage", "ingress_publish")
                out.setdefault(stage, []).append((float(sample.labels["le"]), sample.value))
    return out


def stage_count(hists: Histograms, stage: str) -> float:
    """Observations of `stage` (its +Inf bucket)."""
    return max((n for _, n in hists.get(stage, [])), default=0.0)


def p99(sorted_values: list[float]) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * 0.99))]


def stage_summary(hists: Histograms, since: Histograms | None = None) -> str:
    """`stage=p50/p99ms(max<=M)` for every stage that saw something, in pipeline order (M:
    the bucket bound the slowest observation fell under; a stage's observations are per
    batch, so a rare long one hides from p99); with `since` (an earlier
    `stage_histograms`), of what was observed after it only."""
    parts = []
    for stage in sorted(hists, key=lambda s: (STAGES.index(s) if s in STAGES else 99, s)):
        before = dict((since or {}).get(stage, []))
        rows = [(le, n - before.get(le, 0.0)) for le, n in hists[stage]]
        count = max(n for _, n in rows)
        if count:
            slowest = min(le for le, n in rows if n >= count)
            parts.append(f"{stage}={_quantile(0.5, rows) * 1000:.1f}/"
                         f"{_quantile(0.99, rows) * 1000:.1f}ms(max<={slowest * 1000:g})")
    return " ".join(parts)


def _stage_quantiles(metrics_url: str) -> str:
    """p50/p99 (bucket upper bounds) of the notifier's invitation age by stage: how much of
    the end-to-end time is spent before the notifier fetches the invitation."""
    text = httpx.get(metrics_url, timeout=5).text
    buckets: dict[str, list[tuple[float, float]]] = {}
    for m in re.finditer(r'^hookstream_invitation_age_seconds_bucket\{le="([^"]+)",'
                         r'stage="([^"]+)"\} ([0-9.e+]+)$', text, re.MULTILINE):
        buckets.setdefault(m.group(2), []).append((float(m.group(1)), float(m.group(3))))
    parts = []
    for stage, rows in sorted(buckets.items()):
        rows.sort()
        total = rows[-1][1]
        if not total:
            continue
        q = {p: next(le for le, n in rows if n >= p * total) for p in (0.5, 0.99)}
        parts.append(f"{stage} p50<={q[0.5] * 1000:.0f}ms p99<={q[0.99] * 1000:.0f}ms")
    rows = sorted((float(m.group(1)), float(m.group(2))) for m in re.finditer(
        r'^hookstream_notifier_invitation_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', text,
        re.MULTILINE))
    if rows and rows[-1][1]:
        q = {p: next(le for le, n in rows if n >= p * rows[-1][1]) for p in (0.5, 0.99)}
        parts.append(f"fetch->accepted p50<={q[0.5] * 1000:.0f}ms p99<={q[0.99] * 1000:.0f}ms")
    return "; ".join(parts)


def _name(p: subprocess.Popen) -> str:
    return "smtp-sink" if str(p.args[1]).endswith("notifier_sink.py") else str(p.args[3])


def _spawn_sink(port: int, out: Path, env: dict[str, str], logs: Path) -> subprocess.Popen:
    log = (logs / "smtp-sink.log").open("wb")
    return subprocess.Popen([sys.executable, str(ROOT / "bench" / "notifier_sink.py"),
                             "--port", str(port), "--out", str(out)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _pyspy(procs: list[subprocess.Popen]) -> list[subprocess.Popen]:
    """With BENCH_PYSPY=<dir>: py-spy attached (non-blocking: the service is never paused) to
    each service of BENCH_PYSPY_SERVICES, sampling only while a thread holds the GIL."""
    out = os.environ.get("BENCH_PYSPY")
    if not out:
        return []
    wanted = os.environ.get("BENCH_PYSPY_SERVICES", "notifier").split(",")
    Path(out).mkdir(parents=True, exist_ok=True)
    spies = []
    for p in procs:
        if _name(p) in wanted:
            spies.append(subprocess.Popen(
                [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking",
                 "--gil", "-r", "100", "-f", "raw", "-o", str(Path(out) / f"{_name(p)}.txt"),
                 "-p", str(p.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return spies


def _stop_pyspy(spies: list[subprocess.Popen]) -> None:
    for spy in spies:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
    for spy in spies:
        spy.wait(60)


async def _wait_http(url: str, timeout: float, procs: list[subprocess.Popen],
                     logs: Path) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a service exited ({p.args}); logs in {logs}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s; logs in {logs}")


async def _seed(admin_url: str) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=admin_url, timeout=30,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as admin:
        survey = (await admin.post("/v1/surveys", json={"name": "Bench survey"})).json()
        r = await admin.post(f"/v1/surveys/{survey['id']}/variables",
                             json={"name": "name", "type": "text"})
        r.raise_for_status()
        message = (await admin.post("/v1/messages", json={
            "name": "Invite", "subject": "Your opinion, {{ name }}",
            "body": "Dear {{ name }},\n\nPlease answer: {{ survey_link }}\n"})).json()
        r = await admin.post("/v1/automations", json={
            "name": "Bench", "survey_id": survey["id"], "message_id": message["id"],
            "email_field": "email", "fields": {"mode": "exclude", "paths": []},
            "mapping": [{"field": "name", "variable": "name"}], "delay_days": 0,
            "enabled": True, "error_notifications": {"enabled": False, "recipients": []}})
        r.raise_for_status()
        return r.json()["id"], r.json()["api_key"]


async def _load(ingress_url: str, aid: str, key: str, rate: float, seconds: float,
                first: int = 0, sample_lag: bool = True) -> tuple[dict[str, float], int]:
    """Post at `rate`/s; returns invitation id -> time of the 202, and the failures.
    aiohttp on uvloop: a light client, so its own lag barely shows in the figures."""
    import aiohttp

    sent: dict[str, float] = {}
    failures = 0
    url = f"{ingress_url}/v1/hooks/{aid}"
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        async def post(i: int) -> tuple[int, dict | None]:
            body = f'{{"email": "r{i}@example.com", "name": "R {i}"}}'
            async with session.post(url, data=body, headers=headers) as r:
                return r.status, (await r.json() if r.status == 202 else None)

        async def one(i: int) -> None:
            nonlocal failures
            try:
                status, answer = await post(i)
            except aiohttp.ClientError:
                failures += 1
                return
            if status != 202 or answer is None:
                failures += 1
                return
            sent[invitation_id(aid, answer["event_id"], 0)] = time.time()

        for _ in range(300):  # warm up: until ingress has the automation and answers 202
            if (await post(-1))[0] == 202:
                break
            await asyncio.sleep(0.1)
        stop = asyncio.Event()
        lag_task = asyncio.create_task(_sample_lag(stop)) if sample_lag else None
        tasks = []
        t0 = time.monotonic()
        for n in range(int(rate * seconds)):
            delay = t0 + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(first + n)))
        await asyncio.gather(*tasks)
        stop.set()
        if lag_task is not None:
            await lag_task
    return sent, failures


def _cpu_seconds(pid: int) -> float:
    """CPU of a process and its live descendants (ingress may run worker processes)."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process just ended
        child = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(child)
        ticks[child] = int(fields[11]) + int(fields[12])
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += ticks.get(p, 0)
        todo.extend(children.get(p, []))
    return total / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """(busy, all) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


async def _sample_lag(stop: asyncio.Event, every: float = 10.0) -> None:
    """Print each stage's consumer lag now and then: where a backlog builds up."""
    from bench.streams_common import kafka
    from core.kafka.lag import read_lag

    bootstrap, prefix = os.environ["HOOKSTREAM_KAFKA_BOOTSTRAP"], os.environ["BENCH_PREFIX"]
    groups = [f"{prefix}hookstream-streams.raw", f"{prefix}hookstream-notifier"]
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            t0 = time.time()
            report = await read_lag(kafka(bootstrap), prefix, groups)
            lags: dict[str, int] = {}
            for p in report.partitions:
                lags[p.group.removeprefix(prefix)] = lags.get(p.group.removeprefix(prefix),
                                                              0) + p.lag
            print(f"# lag {lags} at {t0:.1f} took {time.time() - t0:.2f}s", file=sys.stderr)


async def _trace(bootstrap: str, prefix: str, ids: set[str], timeout: float = 60.0
                 ) -> dict[str, tuple[float, float, float]]:
    """invitation id -> (received by the ingress, the worker's due record, the notifier's
    outcome record), epoch seconds: `received_at` and the two records' CreateTime. Splits a
    slow webhook's time between the worker's side and the notifier's (issue 17)."""
    from bench.streams_common import kafka
    from core.kafka import clients
    from schemas import codec

    topics = (f"{prefix}invitations.due", f"{prefix}invitations.outcomes")
    # No group: subscribed, the consumer is given every partition of both topics.
    consumer = clients.consumer(kafka(bootstrap), *topics, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    due: dict[str, tuple[float, float]] = {}
    outcome: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    try:
        while not consumer.assignment() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        while time.monotonic() < deadline:
            behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            if not behind:
                break
            for tp, records in (await consumer.getmany(*behind, timeout_ms=500)).items():
                for r in records:
                    name, value = codec.decode(r.value)
                    iid = value.get("invitation_id")
                    if iid not in ids:
                        continue
                    if tp.topic == topics[0]:
                        due[iid] = (value["received_at"].timestamp(), r.timestamp / 1000)
                    elif name == "InvitationOutcome":
                        outcome[iid] = r.timestamp / 1000
    finally:
        await consumer.stop()
    return {i: (rec, at, outcome[i]) for i, (rec, at) in due.items() if i in outcome}


def _where_the_tail_went(latencies: dict[str, float], trace: dict[str, tuple[float, float,
                                                                                float]],
                         accepted: dict[str, float]) -> str:
    """The slowest 1% of webhooks: median ms up to the worker's send of the due record
    (ingress, raw topic, transform) and from there to the SMTP server's acceptance (the
    worker's commit, the due topic, claim, SMTP)."""
    slow = sorted(latencies, key=latencies.__getitem__, reverse=True)
    slow = [i for i in slow[:max(1, len(slow) // 100)] if i in trace]
    if not slow:
        return "slowest 1%: no trace"
    worker = statistics.median((trace[i][1] - trace[i][0]) * 1000 for i in slow)
    after = statistics.median((accepted[i] - trace[i][1]) * 1000 for i in slow)
    return (f"slowest 1% ({len(slow)}): {worker:.0f} ms received -> due record sent, "
            f"{after:.0f} ms due record -> SMTP accepted (medians)")


def _wait_mailed(accepted: Accepted, sent: dict[str, float], timeout: float) -> None:
    """Until every webhook of `sent` has its mail at the sink, or `timeout` seconds."""
    deadline = time.monotonic() + timeout
    accepted.scan()
    while time.monotonic() < deadline and not all(i in accepted.at for i in sent):
        time.sleep(0.5)
        accepted.scan()


def run_e2e(rate: float, seconds: float, warmup: float = 3.0
            ) -> tuple[float, float, str, str]:
    """(p50 ms, p99 ms, a description, the per-stage summary: `stage=p50/p99ms ...`)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    logs = tmp / "logs"
    logs.mkdir()
    cleanup = contextlib.ExitStack()
    bootstrap = cleanup.enter_context(named_or_scratch_broker())
    accepted = Accepted(tmp / "accepted.log")
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    os.environ["HOOKSTREAM_KAFKA_BOOTSTRAP"], os.environ["BENCH_PREFIX"] = bootstrap, prefix
    ports = {k: free_port() for k in ("admin", "ingress", "worker", "notifier", "smtp",
                                       "survey")}
    env = {**os.environ,
           "HOOKSTREAM_KAFKA_BOOTSTRAP": bootstrap,
           "HOOKSTREAM_TOPIC_PREFIX": prefix,
           "HOOKSTREAM_DATABASE_URL": f"sqlite:///{tmp}/hookstream.db",
           "HOOKSTREAM_SMTP_URL": f"smtp://127.0.0.1:{ports['smtp']}",
           "HOOKSTREAM_ADMIN_TOKEN": TOKEN,
           "HOOKSTREAM_ADMIN_URL": f"http://127.0.0.1:{ports['admin']}",
           "HOOKSTREAM_SURVEY_BASE_URL": f"http://127.0.0.1:{ports['survey']}/s",
           "HOOKSTREAM_ADMIN_PORT": str(ports["admin"]),
           "HOOKSTREAM_INGRESS_PORT": str(ports["ingress"]),
           "HOOKSTREAM_WORKER_PORT": str(ports["worker"]),
           "HOOKSTREAM_NOTIFIER_PORT": str(ports["notifier"]),
           "HOOKSTREAM_VAR_DIR": str(tmp / "var"), "HOOKSTREAM_RATE_LIMIT": "100000",
           "HOOKSTREAM_RATE_BURST": "100000"}
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_spawn_sink(ports["smtp"], tmp / "accepted.log", env, logs))
        procs.append(_spawn("admin", ["admin", "--log-level", "warning"], env, logs))
        asyncio.run(_wait_http(f"{env['HOOKSTREAM_ADMIN_URL']}/readyz", 90, procs, logs))
        aid, key = asyncio.run(_seed(env["HOOKSTREAM_ADMIN_URL"]))
        procs.append(_spawn("ingress", ["ingress"], env, logs))
        procs.append(_spawn("worker", ["worker", "--loglevel", "warn"], env, logs))
        procs.append(_spawn("notifier", ["notifier", "--log-level", "warning"], env, logs))
        ingress_url = f"http://127.0.0.1:{ports['ingress']}"
        asyncio.run(_wait_http(f"{ingress_url}/readyz", 90, procs, logs))
        asyncio.run(_wait_http(f"http://127.0.0.1:{ports['worker']}/readyz", 90, procs, logs))
        asyncio.run(_wait_http(f"http://127.0.0.1:{ports['notifier']}/readyz", 90, procs,
                               logs))
        import uvloop

        # Warm-up, not counted: the first seconds of a fresh pipeline pay one-off costs (new
        # topics' first produces and transactions, first fetches, SMTP connections opening,
        # code paths run the first time); at ~85% of two cores busy, the backlog they leave
        # takes seconds to drain. The figures below are the steady state the target names;
        # the warm-up's own latency is reported beside them.
        warm_text = "no warm-up"
        if warmup > 0:
            warm, _ = uvloop.run(_load(ingress_url, aid, key, rate, warmup, first=10**9,
                                       sample_lag=False))
            _wait_mailed(accepted, warm, 60)
            cold = sorted((accepted.at[i] - t) * 1000 for i, t in warm.items()
                          if i in accepted.at)
            if cold:
                warm_text = (f"warm-up (not counted): {len(warm)} webhooks in {warmup:g}s, "
                             f"p50 {statistics.median(cold):.0f} ms, "
                             f"p99 {p99(cold):.0f} ms")
        urls = [f"http://127.0.0.1:{ports[k]}/metrics" for k in ("ingress", "worker",
                                                                  "notifier")]
        hist0 = stage_histograms(urls)
        cpu0 = {_name(p): _cpu_seconds(p.pid) for p in procs}
        # The scratch broker (a child of this process, if it started one) and the load
        # generator (this process) use the same cores: their share says what is left.
        tree0, own0 = _cpu_seconds(os.getpid()), time.process_time()
        named = int(os.environ.get("BENCH_BROKER_PID", "0"))
        named0 = _cpu_seconds(named) if named else 0.0
        spies = _pyspy(procs)
        busy0 = _machine_busy()
        sent, failures = uvloop.run(_load(ingress_url, aid, key, rate, seconds))
        busy1 = _machine_busy()
        _stop_pyspy(spies)
        machine = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 100
        _wait_mailed(accepted, sent, 60)
        latencies = sorted((accepted.at[i] - t) * 1000 for i, t in sent.items()
                           if i in accepted.at)
        missing = sum(1 for i in sent if i not in accepted.at)
        # Each webhook's 202 time and latency, to tell a stall (a run of slow ones) from
        # slowness spread over the run; with the trace, where its time went: the ingress's
        # receipt, the worker's due record, the notifier's outcome record, the SMTP server's
        # acceptance (epoch s).
        trace = asyncio.run(_trace(bootstrap, prefix, set(sent)))
        (tmp / "timeline.csv").write_text(
            "accepted_202,latency_ms,received,due_sent,outcome_sent,smtp_accepted\n" + "".join(
                f"{t:.4f},{(accepted.at[i] - t) * 1000:.1f},"
                + (",".join(f"{x:.4f}" for x in trace[i]) if i in trace else ",,")
                + f",{accepted.at[i]:.4f}\n"
                for i, t in sorted(sent.items(), key=lambda kv: kv[1]) if i in accepted.at))
        tail = _where_the_tail_went({i: accepted.at[i] - t for i, t in sent.items()
                                     if i in accepted.at}, trace, accepted.at)
        cpu = {name: (_cpu_seconds(p.pid) - cpu0[name]) * 1000 / max(1, len(sent))
               for p in procs if (name := _name(p)) in cpu0}
        own = (time.process_time() - own0) * 1000 / max(1, len(sent))
        tree = (_cpu_seconds(os.getpid()) - tree0) * 1000 / max(1, len(sent))
        cpu["broker"] = max(0.0, tree - own - sum(cpu.values()))
        if named:
            cpu["broker"] += (_cpu_seconds(named) - named0) * 1000 / max(1, len(sent))
        cpu["load"] = own
        cpu_text = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        try:
            stages = _stage_quantiles(f"http://127.0.0.1:{ports['notifier']}/metrics")
        except httpx.HTTPError as exc:
            stages = f"notifier metrics unavailable ({exc})"
        try:
            hist1 = stage_histograms(urls)
            per_stage = stage_summary(hist1, hist0)
            # The worker's and the broker's CPU per webhook follow the batch sizes: each
            # transaction costs ~6 CPU-ms in the worker and ~8 broker requests (bench/README).
            commits = stage_count(hist1, "raw_commit") - stage_count(hist0, "raw_commit")
            per_tx = f"{len(sent) / commits:.1f}" if commits else "?"
        except httpx.HTTPError as exc:
            per_stage, per_tx = f"unavailable ({exc})", "?"

        if not latencies:
            raise RuntimeError(f"no mail arrived; logs in {logs}")
        p50 = statistics.median(latencies)
        p99_ms = p99(latencies)
        info = (f"{len(sent)} webhooks accepted at {rate:.0f}/s for {seconds:.0f}s, "
                f"{len(latencies)} mails, {missing} missing, {failures} non-202, "
                f"max {latencies[-1]:.0f} ms; {tail}; {warm_text}; "
                f"{per_tx} webhooks per worker transaction; "
                f"notifier stages: {stages}; CPU ms per webhook: "
                f"{cpu_text}; machine busy {machine:.0f}% of {os.cpu_count()} cores during "
                f"the load; logs in {logs}")
        return p50, p99_ms, info, per_stage
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(procs):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        cleanup.close()
