"""A/B of ingress variants: several `hookstream ingress` servers on one broker, short wrk runs
alternated between them round after round (the order reversed every other round), so each
round compares the variants under the same neighbours' load; prints each variant's median
requests/s and p99, and the median of its per-round ratios to the first variant.

    flock /tmp/hookstream-bench.lock .venv/bin/python bench/ingress_ab.py \\
        base=/work/wt-edge-base rsgi=.:HOOKSTREAM_INGRESS_INTERFACE=rsgi \\
        [--rounds 8] [--seconds 3] [--kinds single,batch] [--null]

A variant is NAME=ROOT[:VAR=VALUE[,VAR=VALUE...]]: the server runs from the checkout ROOT
(another worktree: the code before a change) with those environment variables. `--null`
serves `bench.ingress_baseline` (publishing replaced by an immediate 202): the server's and
the app's own cost, without Kafka. Bodies as `bench/ingress.py` (the ~600-byte object; the
100-object batch).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from automations.snapshot import ApiKeyHash  # noqa: E402
from bench.ingress import (  # noqa: E402
    BASELINE,
    INGRESS,
    Scripts,
    Server,
    body600,
    ensure_wrk,
    run_wrk,
)
from bench.streams_common import kafka, replication  # noqa: E402
from core.kafka.topics import Topics, ensure_topics  # noqa: E402
from hookstream.local.kafka import named_or_scratch_broker  # noqa: E402
from tests.ingress.conftest import make_snapshot, new_key, publish_snapshots, sha  # noqa: E402


class Variant(Server):
    """NAME=ROOT[:VAR=VALUE,...]: the ingress of checkout ROOT with those variables."""

    def __init__(self, spec: str, env: dict[str, str], tmp: Path, null: bool) -> None:
        name, _, rest = spec.partition("=")
        root, _, assigns = rest.partition(":")
        env = {**env, "HOOKSTREAM_VAR_DIR": str(tmp / name)}
        for assign in filter(None, assigns.split(",")):
            var, _, value = assign.partition("=")
            env[var] = value
        super().__init__(BASELINE if null else INGRESS, env, tmp / f"{name}.log",
                         root=Path(root or ".").resolve(), name=name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="NAME=ROOT[:VAR=VALUE,...]")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--kinds", default="single,batch")
    ap.add_argument("--null", action="store_true", help="the baseline app: no Kafka")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingress-ab-"))
    variants: list[Variant] = []
    with named_or_scratch_broker() as bootstrap:
        topics = Topics(f"ab{int(time.time())}.")
        key = new_key()
        snap = make_snapshot(keys=[ApiKeyHash(sha(key))])

        async def prepare() -> None:
            await ensure_topics(kafka(bootstrap), topics, 3, **replication())
            await publish_snapshots(kafka(bootstrap), topics, snap)

        asyncio.run(prepare())
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKSTREAM_")}
        env.update({"HOOKSTREAM_KAFKA_BOOTSTRAP": bootstrap,
                    "HOOKSTREAM_TOPIC_PREFIX": topics.prefix,
                    "HOOKSTREAM_RATE_LIMIT": "10000000", "HOOKSTREAM_RATE_BURST": "10000000",
                    "HOOKSTREAM_SECRETS_KEY": "bench-secrets-key",
                    "HOOKSTREAM_LOG_LEVEL": "WARNING"})
        try:
            for spec in args.variants:
                variant = Variant(spec, env, tmp, args.null)
                variants.append(variant)
                variant.start()
            batch = orjson.dumps([{"email": f"r{i}@example.com", "first_name": "Ann", "age": i,
                                   "country": "NL", "customer": {"city": "Utrecht"}}
                                  for i in range(100)])
            scripts = Scripts(tmp, key, None, {"single": body600(), "batch": batch})
            path = f"/v1/hooks/{snap.id}"

            def url(v: Variant) -> str:
                return f"http://127.0.0.1:{v.port}{path}"

            for v in variants:  # warm-up: connections, caches, the broker's JIT
                for kind in kinds:
                    run_wrk(wrk, url(v), scripts, 4, kind)
            got: dict[tuple[str, str], list[tuple[float, float]]] = {
                (v.name, k): [] for v in variants for k in kinds}
            for r in range(args.rounds):
                order = variants if r % 2 == 0 else variants[::-1]
                for kind in kinds:
                    for v in order:
                        got[(v.name, kind)].append(run_wrk(wrk, url(v), scripts, args.seconds,
                                                           kind))
                print(f"round {r + 1}: " + " ".join(
                    f"{v.name}/{k}={got[(v.name, k)][-1][0]:.0f}rps/{got[(v.name, k)][-1][1]:.1f}ms"
                    for k in kinds for v in variants), file=sys.stderr, flush=True)
            med = statistics.median
            ref = variants[0].name
            for kind in kinds:
                for v in variants:
                    runs, refs = got[(v.name, kind)], got[(ref, kind)]
                    pairs = list(zip(runs, refs, strict=True))
                    print(f"{kind} {v.name}: rps={med(r[0] for r in runs):.0f} "
                          f"p99_ms={med(r[1] for r in runs):.1f} "
                          f"rps_vs_{ref}={med(a[0] / b[0] for a, b in pairs):.2f} "
                          f"p99_vs_{ref}={med(a[1] / b[1] for a, b in pairs):.2f}")
        finally:
            for v in variants:
                v.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
