"""The pipeline's stage latency histogram (issue 17): one family, `hookstream_stage_seconds`
with a `stage` label, fed by the worker and the notifier with their own stages. Defined
once here, so both can be imported into one process (the tests, `hookstream up`)."""

from __future__ import annotations

from prometheus_client import Histogram

# Fine buckets from 1 to 100 ms: the end-to-end target is a p99 under 100 ms.
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04,
                 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_SECONDS = Histogram("hookstream_stage_seconds",
                          "Latency of one stage of the webhook-to-mail pipeline, by stage.",
                          ["stage"], buckets=STAGE_BUCKETS)
