"""The services' own Prometheus metrics: mail deliveries and webhook POSTs by outcome, and the
event bus's lag (served at /metrics by portico/metrics.py with the rest).

They are prometheus-client objects, counted where the thing happens (services/loops/delivery,
services/shared/pubsub), whoever runs it: `portico serve`'s in-process worker, `portico
worker`, a test. In multiprocess mode (PROMETHEUS_MULTIPROC_DIR) a worker sharing the folder
with API processes is added up by their scrapes. Labels are fixed words, never ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# What became of one attempt to send an outbox row (services/loops/delivery).
SENT = "sent"  # the server took it
RETRY = "retry"  # a temporary failure (or an unexpected error): tried again after the backoff
FAILED = "failed"  # refused for good, or the last attempt failed: the row is FAILED
DELIVERY_OUTCOMES = (SENT, RETRY, FAILED)

DELIVERIES = Counter(
    "portico_deliveries_total",
    "Attempts to send outgoing mail, by outcome: sent, retry (temporary failure, tried again"
    " later) or failed (refused for good, or out of attempts).",
    ["outcome"],
)
for _outcome in DELIVERY_OUTCOMES:  # every outcome from the start: rate() never sees a gap
    DELIVERIES.labels(_outcome)

EVENT_BUS_LAG = Histogram(
    "portico_event_bus_lag_seconds",
    "Time from an event's publish to its receipt by a process with subscribers to its channel"
    " (wall clocks of two hosts with Redis: keep them in sync).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def delivery(outcome: str) -> None:
    """Count one attempt's outcome (one of DELIVERY_OUTCOMES)."""
    DELIVERIES.labels(outcome).inc()


# What became of one webhook POST (services/webhooks/delivery).
WEBHOOK_SUCCEEDED = "succeeded"  # a 2xx answer
WEBHOOK_RETRY = "retry"  # failed, tried again on the schedule
WEBHOOK_FAILED = "failed"  # failed, and the schedule is used up
WEBHOOK_OUTCOMES = (WEBHOOK_SUCCEEDED, WEBHOOK_RETRY, WEBHOOK_FAILED)

WEBHOOK_ATTEMPTS = Counter(
    "portico_webhook_attempts_total",
    "Webhook POSTs, by outcome: succeeded (2xx), retry (failed, tried again later) or failed"
    " (failed, no attempts left).",
    ["outcome"],
)
for _outcome in WEBHOOK_OUTCOMES:
    WEBHOOK_ATTEMPTS.labels(_outcome)


def webhook_attempt(outcome: str) -> None:
    """Count one webhook POST's outcome (one of WEBHOOK_OUTCOMES)."""
    WEBHOOK_ATTEMPTS.labels(outcome).inc()
