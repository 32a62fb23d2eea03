"""The ingress's Prometheus metrics, in a registry of its own per app instance.

Labelled children are cached so the hot path does a dict lookup and an add, not a label
resolution, per request.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

UNKNOWN = "_unknown"  # the automation label for ids that name no automation (bounded cardinality)


class IngressMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("hookstream_ingress_requests_total",
                                "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.accepted = Counter("hookstream_webhooks_accepted_total",
                                "Webhook requests accepted (202) per automation",
                                ["automation"], registry=r)
        self.accepted_events = Counter("hookstream_webhook_events_accepted_total",
                                       "Records (objects) in accepted webhook requests",
                                       ["automation"], registry=r)
        self.rejected = Counter("hookstream_webhooks_rejected_total",
                                "Webhook requests refused, by automation and error code",
                                ["automation", "reason"], registry=r)
        self.replayed = Counter("hookstream_webhooks_idempotent_replays_total",
                                "Requests answered from the idempotency store", registry=r)
        self.publish_seconds = Histogram(
            "hookstream_ingress_publish_seconds", "Time from send to Kafka acknowledgement",
            # Fine from 1 to 100 ms: the ingress publish stage of the end-to-end latency
            # (issue 17, summarised by `make bench-notifier`).
            buckets=(.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .04, .05, .075,
                     .1, .15, .2, .3, .5, 1, 2.5, 5),
            registry=r)
        self.in_flight = Gauge("hookstream_ingress_publishes_in_flight",
                               "Publishes waiting for Kafka's acknowledgement", registry=r)
        # A plain int the hot path adds to (no lock: one event loop), read at scrape time.
        self.publishing = 0
        self.in_flight.set_function(lambda: self.publishing)
        self._req: dict[tuple[str, int], Counter] = {}
        self._acc: dict[str, tuple[Counter, Counter]] = {}
        self._rej: dict[tuple[str, str], Counter] = {}

    def request(self, route: str, status: int) -> None:
        child = self._req.get((route, status))
        if child is None:
            child = self._req[(route, status)] = self.requests.labels(route, str(status))
        child.inc()

    def accept(self, automation: str, events: int) -> None:
        pair = self._acc.get(automation)
        if pair is None:
            pair = self._acc[automation] = (self.accepted.labels(automation),
                                            self.accepted_events.labels(automation))
        pair[0].inc()
        pair[1].inc(events)

    def reject(self, automation: str, reason: str) -> None:
        child = self._rej.get((automation, reason))
        if child is None:
            child = self._rej[(automation, reason)] = self.rejected.labels(automation, reason)
        child.inc()

    def forget(self, automation: str) -> None:
        """Drop a deleted automation's series (its id will not come back)."""
        for metric in (self.accepted, self.accepted_events):
            try:
                metric.remove(automation)
            except KeyError:
                pass  # never counted: nothing to drop
        self._acc.pop(automation, None)
        for key in [k for k in self._rej if k[0] == automation]:
            self.rejected.remove(*key)
            del self._rej[key]
