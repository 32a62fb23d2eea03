"""Where the ingress's time goes under load: py-spy samples `hookstream ingress` (every
process of it: granian's workers are its children) while wrk sends the benchmark's ~600-byte
webhook (or, with `--batch`, the 100-object batch), then prints the functions with the most
samples, by own time and by time including callees (the GIL-holding Python threads; the
librdkafka and granian threads show as native frames with `--native`).

    flock /tmp/hookstream-bench.lock .venv/bin/python bench/ingress_profile.py [--seconds 20]
        [--batch] [--native] [--top 25] [--out collapsed.txt]

py-spy comes with the `test` extra; it needs ptrace rights over the server (root, or
kernel.yama.ptrace_scope=0). Knobs as bench/ingress.py (HOOKSTREAM_INGRESS_WORKERS, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from automations.snapshot import ApiKeyHash  # noqa: E402
from bench.ingress import (  # noqa: E402
    INGRESS,
    LUA,
    PASS_THROUGH,
    PASS_THROUGH_PREFIX,
    Server,
    body600,
    ensure_wrk,
    run_wrk,
)
from bench.streams_common import kafka, replication  # noqa: E402
from core.kafka.topics import Topics, ensure_topics  # noqa: E402
from hookstream.local.kafka import named_or_scratch_broker  # noqa: E402
from tests.ingress.conftest import make_snapshot, new_key, publish_snapshots, sha  # noqa: E402


def summarise(collapsed: Path, top: int) -> str:
    """The `top` frames by own samples and by inclusive samples, from py-spy's raw format
    (one `frame;frame;... count` line per distinct stack)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples"]
    for title, counter in (("own", own), ("inclusive", inclusive)):
        lines.append(f"--- top {top} by {title} time")
        lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--batch", action="store_true")
    ap.add_argument("--native", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="profile-ingress-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        bootstrap = cleanup.enter_context(named_or_scratch_broker())
        topics = Topics(f"prof{int(time.time())}.")
        key = new_key()
        snap = make_snapshot(keys=[ApiKeyHash(sha(key))])

        async def prepare() -> None:
            await ensure_topics(kafka(bootstrap), topics, 3, **replication())
            await publish_snapshots(kafka(bootstrap), topics, snap)

        asyncio.run(prepare())
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("HOOKSTREAM_") or k in PASS_THROUGH
               or k.startswith(PASS_THROUGH_PREFIX)}
        env.update({"HOOKSTREAM_KAFKA_BOOTSTRAP": bootstrap,
                    "HOOKSTREAM_TOPIC_PREFIX": topics.prefix,
                    "HOOKSTREAM_VAR_DIR": str(tmp / "var"),
                    "HOOKSTREAM_RATE_LIMIT": "10000000", "HOOKSTREAM_RATE_BURST": "10000000",
                    "HOOKSTREAM_LOG_LEVEL": "WARNING"})
        if env.get("HOOKSTREAM_INGRESS_WORKERS", "1") != "1":
            env.setdefault("HOOKSTREAM_INGRESS_METRICS_PORT", "0")
        server = Server(INGRESS, env, tmp / "ingress.log")
        server.start()
        cleanup.callback(server.stop)
        body = orjson.dumps([{"email": f"r{i}@example.com", "first_name": "Ann", "age": i,
                              "country": "NL", "customer": {"city": "Utrecht"}}
                             for i in range(100)]) if args.batch else body600()
        script = tmp / "load.lua"
        script.write_text(LUA.format(body=body.decode(), key=key))
        url = f"http://127.0.0.1:{server.port}/v1/hooks/{snap.id}"
        run_wrk(wrk, url, script, 10)  # warm-up
        assert server.proc is not None
        raw = tmp / "collapsed.txt"
        # --gil: only the thread holding the GIL (Python CPU time, not threads waiting);
        # --nonblocking: sampling does not stop the server (it cost most of its throughput).
        cmd = [pyspy, "record", "--format", "raw", "--output", str(raw), "--rate", "100",
               "--gil", "--nonblocking",
               "--subprocesses", "--duration", str(args.seconds), "--pid", str(server.proc.pid)]
        if args.native:
            cmd.append("--native")
        spy = threading.Thread(target=subprocess.run, args=(cmd,),
                               kwargs={"check": True, "capture_output": True})
        spy.start()
        time.sleep(1)
        rps, p99 = run_wrk(wrk, url, script, args.seconds - 2)
        spy.join()
        print(f"under load: {rps:.0f} requests/s, p99 {p99:.1f} ms "
              f"({'batch of 100' if args.batch else '600-byte object'})")
        print(summarise(raw, args.top))
        if args.out is not None:
            shutil.copy(raw, args.out)


if __name__ == "__main__":
    main()
