"""Notifier benchmark (`make bench-notifier`).

1. mails_per_s: rendered invitations into a local aiosmtpd sink (bench/notifier_sink.py, its
   own process: aiosmtpd with a lean handler that counts mails in memory instead of writing
   .eml files) over the notifier's SMTP pool
   (HOOKSTREAM_SMTP_CONCURRENCY connections, reused), against a baseline in the same run that
   opens one connection per mail at the same concurrency. Median of RUNS runs each.
2. e2e: webhooks at RATE/s for SECONDS s (delay 0) through ingress -> worker -> notifier
   (subprocesses, as in production) into an in-process SMTP server; latency from the ingress's
   202 to the SMTP server accepting that webhook's mail, p50 and p99. Needs a Kafka broker:
   HOOKSTREAM_KAFKA_BOOTSTRAP, else the local launcher starts one. `--skip-e2e` skips it.

Prints `mails_per_s=… baseline_mails_per_s=… e2e_p50_ms=… e2e_p99_ms=…` and, after an e2e
run, `stages_p50_p99: ingress_publish=p50/p99ms raw_wait=… …`: each stage's latency histogram
(hookstream_stage_seconds, hookstream_ingress_publish_seconds) scraped from the ingress's,
worker's and notifier's /metrics at the end of the run (see bench/README.md, issue 17).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hookstream.local.kafka import free_port  # noqa: E402
from notifier.mailer import SmtpPool  # noqa: E402
from notifier.render import invitation_mail  # noqa: E402
from notifier.smtp_config import SmtpConfig  # noqa: E402

SENDER = "no-reply@hookstream.local"
BODY = ("Dear {{ name }} from {{ city }},\n\nThank you for your order {{ order }}. Would you "
        "tell us how it went? It takes two minutes:\n\n{{ survey_link }}\n\nKind regards,\n"
        "The webshop team\n")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def mails(n: int) -> list[tuple[bytes, str]]:
    """(mail, recipient) pairs, rendered like the notifier renders invitations."""
    return [(invitation_mail(subject="Your opinion, {{ name }}", body=BODY,
                            values={"name": f"Respondent {i}", "city": "Utrecht",
                                    "order": 100000 + i},
                            link=f"http://127.0.0.1:8084/s/{uuid.uuid4().hex}",
                            to=f"r{i}@example.com", mail_from=SENDER,
                            message_id=f"<{uuid.uuid4()}.invitation@hookstream.local>"),
             f"r{i}@example.com") for i in range(n)]


async def pooled_run(config: SmtpConfig, concurrency: int,
                     batch: list[tuple[bytes, str]]) -> float:
    pool = SmtpPool(config, concurrency)
    sem = asyncio.Semaphore(concurrency * 4)

    async def one(mail: tuple[bytes, str]) -> None:
        async with sem:
            await pool.send(mail[0], SENDER, [mail[1]])

    # Warm the connections first: the steady state is what the notifier lives in.
    await asyncio.gather(*(one(m) for m in batch[:concurrency]))
    t0 = time.perf_counter()
    await asyncio.gather(*(one(m) for m in batch[concurrency:]))
    elapsed = time.perf_counter() - t0
    await pool.close()
    return (len(batch) - concurrency) / elapsed


async def per_mail_run(config: SmtpConfig, concurrency: int,
                       batch: list[tuple[bytes, str]]) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(mail: tuple[bytes, str]) -> None:
        async with sem:
            pool = SmtpPool(config, 1)  # a fresh connection for this mail only
            await pool.send(mail[0], SENDER, [mail[1]])
            await pool.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(m) for m in batch))
    return len(batch) / (time.perf_counter() - t0)


def run(coro: Coroutine[Any, Any, float]) -> float:
    """On uvloop, as `hookstream notifier` runs."""
    import uvloop

    return uvloop.run(coro)


def bench_mails(runs: int, n: int, concurrency: int, sink_kind: str = "lean",
                ) -> tuple[float, float]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-mail-") as folder:
        accepted = Path(folder) / "accepted.log"
        if sink_kind == "lean":
            cmd = [sys.executable, str(ROOT / "bench" / "notifier_sink.py"), "--port",
                   str(port), "--out", str(accepted)]
        else:  # `hookstream smtp-sink` as `make run` uses it: an .eml file per mail
            cmd = [sys.executable, "-m", "hookstream.cli", "smtp-sink", "--dir", folder,
                   "--port", str(port)]
        sink = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            config = SmtpConfig.from_url(f"smtp://127.0.0.1:{port}")
            pooled, baseline = [], []
            for r in range(runs):
                batch = mails(n)
                cpu0, sink0 = time.process_time(), _cpu_seconds(sink.pid)
                pooled.append(run(pooled_run(config, concurrency, batch)))
                ms = {"client": (time.process_time() - cpu0) * 1000 / n,
                      "sink": (_cpu_seconds(sink.pid) - sink0) * 1000 / n}
                baseline.append(run(per_mail_run(config, concurrency, mails(n // 2))))
                print(f"# run {r + 1}: pooled {pooled[-1]:.0f}/s (CPU ms per mail: sending "
                      f"{ms['client']:.2f}, aiosmtpd sink {ms['sink']:.2f}), one connection "
                      f"per mail {baseline[-1]:.0f}/s", file=sys.stderr)
        finally:
            sink.terminate()
            sink.wait(10)
        received = (len(accepted.read_bytes().splitlines()) if sink_kind == "lean"
                    else len(list(Path(folder).glob("*.eml"))))
        expected = runs * (n + n // 2)
        if received != expected:
            raise RuntimeError(f"the sink accepted {received} mails, expected {expected}")
    return statistics.median(pooled), statistics.median(baseline)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mails", type=int, default=3000, help="mails per pooled run")
    ap.add_argument("--concurrency", type=int,
                    default=int(os.environ.get("HOOKSTREAM_SMTP_CONCURRENCY", 8)))
    ap.add_argument("--rate", type=float, default=200.0, help="e2e webhooks per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="e2e duration")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="e2e seconds of load at --rate before the measured ones, not counted "
                         "(0: none); their latency is printed on its own")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--sink", choices=("lean", "eml"), default="lean",
                    help="mails_per_s into bench/notifier_sink.py (aiosmtpd, mails counted in "
                         "memory) or into `hookstream smtp-sink` (aiosmtpd, an .eml file each)")
    args = ap.parse_args()

    pooled, baseline = bench_mails(args.runs, args.mails, args.concurrency, args.sink)
    line = f"mails_per_s={pooled:.0f} baseline_mails_per_s={baseline:.0f}"
    if not args.skip_e2e:
        from bench.notifier_e2e import run_e2e

        p50, p99, info, stages = run_e2e(args.rate, args.seconds, args.warmup)
        print(f"# e2e: {info}", file=sys.stderr)
        line += f" e2e_p50_ms={p50:.0f} e2e_p99_ms={p99:.0f}"
        # p50/p99 of each stage, from the services' /metrics at the end of the run.
        line += f"\nstages_p50_p99: {stages}"
    print(line)


if __name__ == "__main__":
    main()
