"""The notifier's claim and finish alone (`make bench-notifier-claim`): the SQLAlchemy
reference (`notifier.store`) against the driver-cursor fast path (`notifier.store_dbapi`).

Each round claims CLAIMS new invitations in transactions of `Db.MAX_BATCH` (as `Db.tx`
batches them, on one kept connection), then finishes them as sent likewise; reference and fast
path alternate round by round on the same database. `--respondents new` gives every invitation
a new address (the e2e benchmark's case: the upsert inserts), `existing` reuses a pool of
addresses invited before (the upsert reads, merges and updates). Prints, per path, the median
CPU-µs per claim and per finish and claims per second, and the median of the per-pair ratios
(fast/reference).

    .venv/bin/python bench/notifier_claim.py [--rounds 10] [--claims 2000]
        [--respondents new|existing] [--database-url URL]  # default: a fresh SQLite file
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Connection, Engine  # noqa: E402

from notifier import store, store_dbapi  # noqa: E402
from notifier.migrations import migrate  # noqa: E402
from notifier.models import SENT  # noqa: E402

PATHS = {"reference": (store.claim, store.finish), "fast": (store_dbapi.claim, store_dbapi.finish)}
KW = {"survey_name": "Customer satisfaction", "lease": timedelta(minutes=2),
      "message_id": "<m@hookstream.local>"}


def request(email: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"invitation_id": str(uuid.uuid4()), "automation_id": "auto-bench",
            "automation_version": 1, "survey_id": "survey-1", "event_id": uuid.uuid4().hex,
            "record_index": 0, "email": email,
            "variables": {"name": "R", "city": "Utrecht", "order": 100001},
            "received_at": now, "due_at": now, "delay_days": 0}


def batches(conn: Connection, items: list[Any], fn: Callable[[Connection, Any], Any]) -> float:
    """CPU seconds to run `fn` on each item, MAX_BATCH of them per transaction."""
    t0 = time.process_time()
    for i in range(0, len(items), store.Db.MAX_BATCH):
        with conn.begin():
            store._new_transaction(conn)
            for item in items[i:i + store.Db.MAX_BATCH]:
                fn(conn, item)
    return time.process_time() - t0


def one_round(engine: Engine, path: str, claims: int, emails: list[str] | None
              ) -> tuple[float, float, float]:
    claim, finish = PATHS[path]
    reqs = [request(emails[i % len(emails)] if emails else f"r{uuid.uuid4().hex}@example.com")
            for i in range(claims)]
    with engine.connect() as conn:
        wall = time.perf_counter()
        cpu_claim = batches(conn, reqs, lambda c, r: claim(c, r, owner="bench", **KW))
        wall = time.perf_counter() - wall
        kinds = {r["invitation_id"] for r in reqs}
        cpu_finish = batches(conn, sorted(kinds), lambda c, iid: finish(
            c, iid, status=SENT, attempts=1, smtp_code=250, automation_id="auto-bench"))
    return cpu_claim / claims * 1e6, cpu_finish / claims * 1e6, claims / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--claims", type=int, default=2000)
    ap.add_argument("--respondents", choices=("new", "existing"), default="new")
    ap.add_argument("--database-url")
    args = ap.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='bench-claim-')}/n.db"
    migrate(url)
    db = store.Db(url)  # its engine, with the notifier's SQLite pragmas
    emails = None
    if args.respondents == "existing":
        emails = [f"r{i}@example.com" for i in range(500)]
        one_round(db.engine, "reference", len(emails), emails)  # invited once before
    one_round(db.engine, "fast", 200, emails)  # warm both (statement caches, prepares)
    one_round(db.engine, "reference", 200, emails)
    results: dict[str, list[tuple[float, float, float]]] = {p: [] for p in PATHS}
    for i in range(args.rounds):
        order = ("reference", "fast") if i % 2 == 0 else ("fast", "reference")
        for path in order:
            results[path].append(one_round(db.engine, path, args.claims, emails))
    db.engine.dispose()
    for path, rs in results.items():
        print(f"{path}: claim_cpu_us={statistics.median(r[0] for r in rs):.0f} "
              f"finish_cpu_us={statistics.median(r[1] for r in rs):.0f} "
              f"claims_per_s={statistics.median(r[2] for r in rs):.0f}")
    ratios = [(f[0] / r[0], f[1] / r[1]) for r, f in zip(results["reference"], results["fast"],
                                                          strict=True)]
    print(f"fast/reference ({args.respondents} respondents, {engine_name(url)}, "
          f"{args.rounds} pairs of {args.claims}): claim_cpu="
          f"{statistics.median(r[0] for r in ratios):.2f}x finish_cpu="
          f"{statistics.median(r[1] for r in ratios):.2f}x")


def engine_name(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0]


if __name__ == "__main__":
    main()
