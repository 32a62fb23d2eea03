"""Prometheus metrics of the streams worker (served on /metrics by the Faust web server)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("hookstream_stream_records_total",
                  "Records read from webhooks.raw, by outcome (accepted, filtered, failed).",
                  ["outcome"])
FILTERED = Counter("hookstream_records_filtered_total",
                   "Records the automation's filters left out (not errors).", ["automation"])
INVITATIONS = Counter("hookstream_invitations_emitted_total",
                      "Invitations emitted by the streams, by destination (due, scheduled).",
                      ["destination"])
DLQ = Counter("hookstream_dlq_records_total", "Records sent to webhooks.dlq, by reason.",
              ["reason"])
SCHEDULED = Counter("hookstream_invitations_scheduled_total",
                    "Invitations stored by the scheduler to wait for their due time.")
RELEASED = Counter("hookstream_invitations_released_total",
                   "Invitations the scheduler released to invitations.due.")
WAITING = Gauge("hookstream_scheduled_waiting",
                "Invitations waiting in the scheduler's store (partitions this worker owns).")
RELEASE_LAG = Histogram("hookstream_release_lag_seconds",
                        "Seconds between an invitation's due_at and its release commit.",
                        buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 30.0, 300.0))
TRANSACTIONS = Counter("hookstream_stream_transactions_total",
                       "Kafka transactions, by loop (streams, scheduler) and result.",
                       ["loop", "result"])
# Send windows (issue 16).
WINDOW_HELD = Counter("hookstream_send_window_held_total",
                      "Invitations sent to the scheduler to wait until their automation's send "
                      "window opens (due while it was closed).")
WINDOW_ZONE_FALLBACK = Counter("hookstream_send_window_zone_fallbacks_total",
                               "Invitations whose respondent time-zone field held no IANA "
                               "zone name, so the automation's zone was used.")
# Issue 17: the worker's stages of `core.stages.STAGE_SECONDS` (streams/txloop.py), per batch
# of one partition: `*_wait` from the oldest record's Kafka timestamp to the fetch,
# `transform`/`schedule` the handler, `*_commit` sending the outputs and committing.
