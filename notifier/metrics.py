"""The notifier's Prometheus metrics (served on `settings.notifier_port` by `http.py`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from core.stages import STAGE_SECONDS

INVITATIONS_SENT = Counter("hookstream_invitations_sent_total",
                           "Invitation mails the SMTP server accepted.")
INVITATIONS_FAILED = Counter("hookstream_invitations_failed_total",
                             "Invitations that ended without a mail, by reason.", ["reason"])
INVITATION_OUTCOMES = Counter("hookstream_invitation_outcomes_total",
                              "Outcomes emitted on invitations.outcomes, by status.", ["status"])
SMTP_RETRIES = Counter("hookstream_smtp_retries_total",
                       "Transient SMTP failures that were retried, by kind.", ["kind"])
SMTP_SECONDS = Histogram("hookstream_smtp_seconds", "Time to hand one mail to the SMTP server.",
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                  2.5, 5, 10, 30))
ALERTS_SENT = Counter("hookstream_alerts_sent_total",
                      "Error alert mails sent to automations' error recipients.")
AUTOMATIONS_DISABLED = Counter("hookstream_automations_disabled_total",
                               "Automations disabled after too many consecutive failures.")
ERRORS_RECORDED = Counter("hookstream_automation_errors_recorded_total",
                          "Automation errors recorded in SQL, by kind.", ["kind"])
# Where end-to-end time goes: `queued` from the webhook's receipt at ingress (received_at) to
# this notifier fetching its invitation (ingress + streams + the worker's transaction commit
# + the fetch), `sent` from that receipt to the SMTP server accepting the mail.
INVITATION_AGE = Histogram("hookstream_invitation_age_seconds",
                           "Age of an invitation (since its webhook was received) when the "
                           "notifier fetched it (stage=queued) and when its mail was accepted "
                           "(stage=sent; delayed invitations included).", ["stage"],
                           buckets=(0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5,
                                    5, 10, 60, 3600, 86400))
NOTIFIER_SECONDS = Histogram("hookstream_notifier_invitation_seconds",
                             "From fetching an invitation to the SMTP server accepting its "
                             "mail: the notifier's own share of the end-to-end latency.",
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                                      0.5, 0.75, 1, 2.5, 5, 10, 60))
HELD_WAITING = Gauge("hookstream_invitations_held",
                     "Invitations held because their automation is disabled (issue 15): sent "
                     "when it is enabled again, expired after the hold expiry, dropped when it "
                     "is deleted. Counted at each sweep of held invitations.")
# Issue 17: the notifier's stages in the pipeline's latency family (the worker exports the
# same family with its stages; the buckets are the same). `due_wait` from the due record's
# Kafka timestamp (the worker wrote it, inside its transaction) to this notifier fetching it,
# `claim` the invitation's SQL claim, `smtp` from asking the pool for a connection to the SMTP
# server accepting the mail.
STAGE_DUE_WAIT = STAGE_SECONDS.labels("due_wait")
STAGE_CLAIM = STAGE_SECONDS.labels("claim")
STAGE_SMTP = STAGE_SECONDS.labels("smtp")
