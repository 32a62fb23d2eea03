"""Benchmark of the ingress: wrk (its own process, loopback) against `hookstream ingress`.

(a) single-object webhooks, (b) batches of 100 objects, and the baseline: the same app and
server with publishing replaced by an immediate 202 (`bench/ingress_baseline.py`).
Uses the broker named by HOOKSTREAM_KAFKA_BOOTSTRAP, else starts a local one on free ports
(stopped at the end). Prints medians of RUNS runs as one line:

    ingress_rps=… baseline_rps=… ratio=… batch_events_per_s=… p99_ms=…

Knobs (environment): BENCH_RUNS (7), BENCH_SECONDS (5), BENCH_CONNECTIONS (50),
BENCH_SERVER (granian|uvicorn), BENCH_WARMUP (15 s); HOOKSTREAM_INGRESS_PRODUCERS,
HOOKSTREAM_INGRESS_CLIENT and HOOKSTREAM_INGRESS_LINGER_MS are passed on to both servers.

`--signed` (or BENCH_SIGNED=1; `make bench-ingress BENCH_SIGNED=1`): the automation takes
Standard Webhooks signatures only, and every request is signed with its own webhook-id (wrk
reads them from a file written just before each run, so none is a replay): the cost of the
HMAC and of remembering each webhook-id in the idempotency store. The line then starts with
`signed`; both servers (real and baseline) verify, so `ratio` is still Kafka's share.

The machine is shared and noisy (the baseline alone swings by a third between runs), so
each run measures both servers back to back, alternating which goes first, and `ratio` is
the median of the runs' own ratios (each against the baseline of the same run); the other
figures are medians too. stderr shows every run.

Peers (issue 17), measured in the same runs, the order alternated each run:
- `benthos` on the PATH (Benthos v4.27: `http_server` -> `kafka_franz`, idempotent, acks=all,
  64 in flight; `BENCH_BENTHOS` names another binary): the same wrk load against it, and a
  second line `peer benthos_rps=… benthos_p99_ms=… rps_ratio=… p99_ratio=…` (medians of
  the runs' own ratios, hookstream over Benthos). Build it with the Go toolchain:
  `bench/benthos/build.sh DIR` (DIR on your PATH). Benthos also takes the batch body (one
  record of 100 events a request, as the ingress writes it): `benthos_batch_events_per_s=…
  benthos_batch_ratio=…` (against the bare loop of the same run), what a Go edge gets of the
  batch target.
- always: a bare confluent-kafka loop (`bench/ingress_peer_loop.py`) sending the batch
  request's body as fast as it can, one record of 100 events at a time, to one partition (as
  the ingress writes one automation): `peer loop_events_per_s=… batch_ratio=…`.

The single webhook is a ~600-byte JSON object (the peers' body); the batch 100 objects.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
from aiokafka.admin import NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from automations.signing import SecretBox, generate  # noqa: E402
from automations.snapshot import ApiKeyHash, SealedSecret  # noqa: E402
from bench.streams_common import kafka, replication  # noqa: E402
from core.kafka import clients  # noqa: E402
from core.kafka.topics import Topics, ensure_topics  # noqa: E402
from hookstream.local.kafka import free_port, named_or_scratch_broker  # noqa: E402
from tests.ingress.conftest import make_snapshot, new_key, publish_snapshots, sha  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "7"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
SERVER = os.environ.get("BENCH_SERVER", "granian")
WARMUP = int(os.environ.get("BENCH_WARMUP", "15"))
SIGNED = os.environ.get("BENCH_SIGNED", "") == "1" or "--signed" in sys.argv[1:]
SECRETS_KEY = "bench-secrets-key"
# Signed requests wrk may send in one run at most (ids beyond it would repeat: replays).
SIGNED_PER_SECOND = 15_000
# Server knobs a bench run may vary (the baseline gets them too).
PASS_THROUGH = ("HOOKSTREAM_INGRESS_PRODUCERS", "HOOKSTREAM_INGRESS_CLIENT",
                "HOOKSTREAM_INGRESS_LINGER_MS", "HOOKSTREAM_INGRESS_WORKERS",
                "HOOKSTREAM_INGRESS_INTERFACE")
BENTHOS = os.environ.get("BENCH_BENTHOS") or shutil.which("benthos")
BENTHOS_CONF = """
http: {{enabled: false}}
logger: {{level: WARN}}
metrics: {{none: {{}}}}
input:
  http_server:
    address: 127.0.0.1:{port}
    path: {path}
    allowed_verbs: [POST]
    timeout: 5s
output:
  kafka_franz:
    seed_brokers: [{boot}]
    topic: {topic}
    key: bench-automation
    idempotent_write: true
    compression: none
    max_in_flight: 64
    timeout: 5s
"""


def body600() -> bytes:
    """A ~600-byte webhook JSON object (the peer harness's body: a typical form answer)."""
    d: dict[str, object] = {
        "email": "respondent12345@example.com", "first_name": "Annemarie",
        "last_name": "van der Berg", "age": 42, "city": "Utrecht", "country": "NL",
        "member": True, "signup_date": "2026-03-14", "plan": "pro",
        "order": {"id": "ord_8f3a2c91", "total": 129.95, "currency": "EUR", "items": 3},
        "internal_id": 123456, "phone": "+31612345678", "language": "nl-NL",
        "utm": {"source": "newsletter", "medium": "email", "campaign": "spring-2026"},
        "tags": ["vip", "returning"], "submitted_at": "2026-03-14T09:26:53.589Z",
        "survey_ref": "srv_2f9d7e1b"}
    b = orjson.dumps(d)
    d["note"] = "x" * max(0, 600 - len(b) - 10)
    return orjson.dumps(d)
# A secured cluster's client settings (HOOKSTREAM_KAFKA_SECURITY_PROTOCOL, ..._SASL_*, ...)
# reach the servers too.
PASS_THROUGH_PREFIX = "HOOKSTREAM_KAFKA_"


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    print("wrk (HTTP load generator) is missing; installing the Debian package 'wrk' with "
          "apt-get ...", file=sys.stderr)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
    wrk = shutil.which("wrk")
    if not wrk:
        sys.exit("wrk is not installed and could not be installed; run "
                 "'sudo apt-get install wrk' and try again")
    return wrk


LUA = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "{key}"
"""


SIGNED_LUA = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["webhook-timestamp"] = "{timestamp}"
local ids, sigs, n, i = {{}}, {{}}, 0, 0
for line in io.lines("{data}") do
  local id, sig = line:match("^(%S+) (.+)$")
  n = n + 1
  ids[n] = id
  sigs[n] = sig
end
request = function()
  i = i % n + 1
  wrk.headers["webhook-id"] = ids[i]
  wrk.headers["webhook-signature"] = sigs[i]
  return wrk.format()
end
"""


class Scripts:
    """The wrk script of each kind of request; signed ones anew before every run."""

    def __init__(self, tmp: Path, key: str, secret: str | None, bodies: dict[str, bytes]) -> None:
        self.tmp = tmp
        self.key = key
        self.secret = secret
        self.bodies = bodies
        self.runs = 0

    def __call__(self, kind: str, seconds: int) -> Path:
        body = self.bodies[kind]
        path = self.tmp / f"{kind}.lua"
        if self.secret is None:
            path.write_text(LUA.format(body=body.decode(), key=self.key))
            return path
        self.runs += 1
        ts = str(int(time.time()))
        signer = hmac.new(base64.b64decode(self.secret.removeprefix("whsec_")), digestmod="sha256")
        data = self.tmp / f"{kind}.signatures"
        with data.open("w") as out:
            for i in range(SIGNED_PER_SECOND * seconds):
                msg_id = f"msg_{self.runs}_{i}"
                mac = signer.copy()
                mac.update(f"{msg_id}.{ts}.".encode() + body)
                out.write(f"{msg_id} v1,{base64.b64encode(mac.digest()).decode()}\n")
        path.write_text(SIGNED_LUA.format(body=body.decode(), timestamp=ts, data=data))
        return path


def run_wrk(wrk: str, url: str, script: Path | Scripts, seconds: int,
            kind: str = "single") -> tuple[float, float]:
    """(requests per second, p99 latency in ms); non-2xx answers make the run invalid."""
    if isinstance(script, Scripts):
        script = script(kind, seconds)
    out = subprocess.run([wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True)
    text = out.stdout
    if "Non-2xx" in text or "Socket errors" in text:
        raise SystemExit(f"wrk saw errors against {url}:\n{text}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
    assert m is not None, text
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return rps, p99


# The real ingress, and the baseline: the same app and server, publishing nothing.
INGRESS = ("hookstream.cli", "ingress")
BASELINE = ("bench.ingress_baseline",)


class Server:
    """One ingress (or baseline) process on a free port, run from `root` (another checkout
    for bench/ingress_ab.py's variants) with this interpreter."""

    def __init__(self, module: tuple[str, ...], env: dict[str, str], log: Path,
                 root: Path = ROOT, name: str = "the ingress") -> None:
        self.module = module
        self.port = free_port()
        self.env = env
        self.log = log
        self.root = root
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.module, "--port", str(self.port), "--server", SERVER],
            env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
            start_new_session=True)
        out.close()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.2)
        raise SystemExit(f"{self.name} did not become ready; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(30)


class Benthos:
    """The peer: Benthos on a free port, writing to `topic` of the same broker."""

    def __init__(self, binary: str, bootstrap: str, topic: str, path: str, tmp: Path) -> None:
        self.port = free_port()
        self.conf = tmp / "benthos.yaml"
        self.conf.write_text(BENTHOS_CONF.format(port=self.port, path=path, boot=bootstrap,
                                                 topic=topic))
        self.log = tmp / "benthos.log"
        self.binary = binary
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, body: bytes) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.post(self.url, content=body, timeout=5).status_code < 300:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.2)
        raise SystemExit(f"benthos did not answer; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(30)


def run_loop(topic: str, value: Path, seconds: int, key: str, env: dict[str, str]) -> float:
    """Records per second of the bare confluent-kafka loop (`bench/ingress_peer_loop.py`)."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "ingress_peer_loop.py"), topic,
                          str(value), str(seconds), key], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=seconds + 90, check=True)
    m = re.search(r"rps=([\d.]+)", out.stdout)
    if m is None:
        raise SystemExit(f"the peer loop printed no rate:\n{out.stdout}{out.stderr}")
    return float(m.group(1))


def main() -> None:
    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingress-"))
    cleanup = contextlib.ExitStack()
    bootstrap = cleanup.enter_context(named_or_scratch_broker())
    servers: list[Server] = []
    benthos: Benthos | None = None
    try:
        topics = Topics(f"bench{int(time.time())}.")
        peer_topic = f"{topics.prefix}peer"
        key = new_key()
        snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
        secret = generate() if SIGNED else None
        if secret is not None:
            box = SecretBox(SECRETS_KEY)
            snap = replace(snap, auth_mode="signature", signing_secrets=(
                SealedSecret("bench", box.seal(secret, snap.id)),))

        async def prepare() -> None:
            await ensure_topics(kafka(bootstrap), topics, 3, **replication())
            await publish_snapshots(kafka(bootstrap), topics, snap)
            admin = clients.admin(kafka(bootstrap))
            await admin.start()
            try:  # the peers' topic: as webhooks.raw, one automation's records on one partition
                rf = replication().get("replication_factor", 1)
                await admin.create_topics([NewTopic(peer_topic, 3, rf)])
            finally:
                await admin.close()

        asyncio.run(prepare())
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("HOOKSTREAM_") or k in PASS_THROUGH
               or k.startswith(PASS_THROUGH_PREFIX)}
        env.update({"HOOKSTREAM_KAFKA_BOOTSTRAP": bootstrap,
                    "HOOKSTREAM_TOPIC_PREFIX": topics.prefix,
                    "HOOKSTREAM_VAR_DIR": str(tmp / "var"),
                    "HOOKSTREAM_RATE_LIMIT": "10000000", "HOOKSTREAM_RATE_BURST": "10000000",
                    "HOOKSTREAM_SECRETS_KEY": SECRETS_KEY, "HOOKSTREAM_LOG_LEVEL": "WARNING"})
        if env.get("HOOKSTREAM_INGRESS_WORKERS", "1") != "1":
            # Several workers serve /metrics on internal ports only (any free ones here).
            env.setdefault("HOOKSTREAM_INGRESS_METRICS_PORT", "0")
        real = Server(INGRESS, env, tmp / "ingress.log")
        baseline = Server(BASELINE, env, tmp / "baseline.log")
        servers += [real, baseline]
        for s in servers:
            s.start()
        one = body600()
        batch = orjson.dumps([{"email": f"r{i}@example.com", "first_name": "Ann", "age": i,
                               "country": "NL", "customer": {"city": "Utrecht"}}
                              for i in range(100)])
        (tmp / "batch.json").write_bytes(batch)
        scripts = Scripts(tmp, key, secret, {"single": one, "batch": batch})
        url = f"/v1/hooks/{snap.id}"
        real_url = f"http://127.0.0.1:{real.port}{url}"
        base_url = f"http://127.0.0.1:{baseline.port}{url}"
        if BENTHOS and not SIGNED:
            benthos = Benthos(BENTHOS, bootstrap, peer_topic, url, tmp)
            benthos.start(one)
            print(f"peer: {BENTHOS}", file=sys.stderr)
        # Warm-up: connections, caches, and the broker's JIT. A fresh broker's C2 compiler
        # takes a fifth of a core for 10-20 s under this load; a 6 s warm-up left that in
        # the first runs of the published path only (its ratio 0.1 lower).
        # Then one whole unrecorded run: the first recorded run was still the lowest.
        run_wrk(wrk, real_url, scripts, WARMUP)
        if benthos is not None:
            run_wrk(wrk, benthos.url, scripts, max(5, WARMUP // 2))
        ing, base, p99s, events, ratios = [], [], [], [], []
        b_rps_all, b_p99_all, rps_ratios, p99_ratios = [], [], [], []
        loops, batch_ratios, b_batch_all, b_batch_ratios = [], [], [], []
        for i in range(-1, RUNS):
            got: dict[str, tuple[float, float]] = {}
            order = ["baseline", "real", "benthos"] if benthos is not None else \
                ["baseline", "real"]
            if i % 2:
                order.reverse()
            for name in order:
                target = {"baseline": base_url, "real": real_url}.get(name) or \
                    benthos.url  # type: ignore[union-attr]
                got[name] = run_wrk(wrk, target, scripts, SECONDS)
            pair = ["batch", "loop", "benthos_batch"] if benthos is not None else \
                ["batch", "loop"]
            if i % 2:
                pair.reverse()
            for name in pair:
                if name == "batch":
                    batch_rps, _ = run_wrk(wrk, real_url, scripts, SECONDS, "batch")
                elif name == "benthos_batch":
                    bb_batch_rps, _ = run_wrk(wrk, benthos.url,  # type: ignore[union-attr]
                                              scripts, SECONDS, "batch")
                else:
                    loop_rps = run_loop(peer_topic, tmp / "batch.json", SECONDS, snap.id, env)
            if i < 0:
                continue  # the warm-up run
            r_rps, p99 = got["real"]
            b_rps = got["baseline"][0]
            ratios.append(r_rps / b_rps)
            base.append(b_rps)
            ing.append(r_rps)
            p99s.append(p99)
            events.append(batch_rps * 100)
            loops.append(loop_rps * 100)
            batch_ratios.append(batch_rps / loop_rps)
            line = (f"run {i + 1} ({' '.join(order)}): ingress_rps={r_rps:.0f} "
                    f"baseline_rps={b_rps:.0f} ratio={r_rps / b_rps:.2f} p99_ms={p99:.1f} "
                    f"batch_events_per_s={batch_rps * 100:.0f} "
                    f"loop_events_per_s={loop_rps * 100:.0f}")
            if "benthos" in got:
                bb_rps, bb_p99 = got["benthos"]
                b_rps_all.append(bb_rps)
                b_p99_all.append(bb_p99)
                rps_ratios.append(r_rps / bb_rps)
                p99_ratios.append(p99 / bb_p99)
                b_batch_all.append(bb_batch_rps * 100)
                b_batch_ratios.append(bb_batch_rps / loop_rps)
                line += (f" benthos_rps={bb_rps:.0f} benthos_p99_ms={bb_p99:.1f}"
                         f" benthos_batch_events_per_s={bb_batch_rps * 100:.0f}")
            print(line, file=sys.stderr, flush=True)
        med = statistics.median
        print(("signed " if SIGNED else "") +
              f"ingress_rps={med(ing):.0f} baseline_rps={med(base):.0f} "
              f"ratio={med(ratios):.2f} "
              f"batch_events_per_s={med(events):.0f} "
              f"p99_ms={med(p99s):.1f}")
        peer = f"peer loop_events_per_s={med(loops):.0f} batch_ratio={med(batch_ratios):.2f}"
        if b_rps_all:
            peer += (f" benthos_rps={med(b_rps_all):.0f} benthos_p99_ms={med(b_p99_all):.1f} "
                     f"rps_ratio={med(rps_ratios):.2f} p99_ratio={med(p99_ratios):.2f} "
                     f"benthos_batch_events_per_s={med(b_batch_all):.0f} "
                     f"benthos_batch_ratio={med(b_batch_ratios):.2f}")
        print(peer)
    finally:
        if benthos is not None:
            benthos.stop()
        for s in servers:
            s.stop()
        cleanup.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
