"""Sending webhook deliveries: a worker's POSTs under way, their outcomes, and what comes
next (services/webhooks/claims takes the rows, services/webhooks/requests makes each POST).

- A `Sender` keeps up to MAX_IN_FLIGHT POSTs under way, at most claims.PER_ENDPOINT to one
  endpoint, and claims more as each ends: a slow receiver holds only its own slots.
- Every outcome is written only WHERE lease_until still equals the claim's token, with the
  row's current retry schedule (a redelivery during the POST starts a new one). The POSTs
  happen outside any transaction.
- A 2xx answer within requests.TIMEOUT_SECONDS is a success; anything else a failure, retried
  after RETRY_SCHEDULE (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about
  27 hours), then FAILED. Portico's own faults (a secret it cannot decrypt) are no attempt:
  the row goes back, due again in NOT_SENT_DELAY, and the receiver is not blamed.
- A worker that dies mid-POST leaves its lease to expire (LEASE_SECONDS); then a worker sends
  the row again with the same webhook-id. Delivery is at least once; receivers dedupe by
  webhook-id (Standard Webhooks), which makes it exactly once for them.
- An endpoint that has failed every attempt for DISABLE_AFTER is disabled with a reason,
  and the firm's owners and admins are emailed (in the same transaction). Rows queued before
  wait and are sent when staff enable it again; no event is queued while it is disabled.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from models import (
    Firm,
    StaffMember,
    StaffRole,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from portico.settings import Settings
from services.outbound import outbox
from services.shared import metrics, sql
from services.webhooks import claims, requests, urls

log = logging.getLogger(__name__)

RETRY_SCHEDULE = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
DISABLE_AFTER = timedelta(days=5)
# A POST starts right after its claim and ends within the resolver's and the request's time:
# the lease outlives it, so in normal operation each attempt is made once.
LEASE_SECONDS = 2 * (urls.RESOLVE_SECONDS + requests.TIMEOUT_SECONDS)
MAX_IN_FLIGHT = 20  # POSTs under way per worker
NOT_SENT_DELAY = timedelta(minutes=1)
DISABLED_KIND = "WEBHOOK_DISABLED"


class Sender:
    """One worker's POSTs under way: `fill` claims due rows for the free slots and starts
    them; each writes its outcome when it ends."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.tasks: set[asyncio.Task[None]] = set()
        self.busy: Counter[int] = Counter()  # endpoint id: POSTs under way

    async def fill(self, now: datetime | None = None) -> int:
        """Claims due rows for the free slots and starts their POSTs; how many it started.
        `now` fixes the clock of the claim and of the retries it schedules (tests)."""
        free = MAX_IN_FLIGHT - len(self.tasks)
        if free <= 0:
            return 0
        rows, lease = await claims.claim(free, now or datetime.now(UTC), LEASE_SECONDS, self.busy)
        if not rows:
            return 0
        by_id = {
            e.pk: e for e in await WebhookEndpoint.filter(id__in={r.endpoint_id for r in rows})
        }
        for row in rows:
            endpoint = by_id.get(row.endpoint_id)
            if endpoint is None:  # deleted since the claim: its rows went with it
                continue
            self.busy[endpoint.pk] += 1
            task = asyncio.create_task(self._attempt(endpoint, row, lease, now))
            self.tasks.add(task)
            task.add_done_callback(lambda t, e=endpoint.pk: self._ended(t, e))
        return len(rows)

    def _ended(self, task: asyncio.Task[None], endpoint_id: int) -> None:
        self.tasks.discard(task)
        self.busy[endpoint_id] -= 1
        if not self.busy[endpoint_id]:
            del self.busy[endpoint_id]

    async def wait_one(self) -> None:
        """Until a POST under way ends (at once when none is)."""
        if self.tasks:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)

    async def finish(self) -> None:
        """Until every POST under way has ended (each within its timeout)."""
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _attempt(
        self, endpoint: WebhookEndpoint, row: WebhookDelivery, lease: datetime, now: datetime | None
    ) -> None:
        try:
            outcome = await requests.post(self.settings, self.client, endpoint, row)
        except Exception:  # Portico's own fault: nothing was sent, the receiver is not blamed
            log.exception("webhook delivery %s not sent; trying again later", row.pk)
            try:
                await claims.put_back(row, lease, (now or datetime.now(UTC)) + NOT_SENT_DELAY)
            except Exception:  # the lease runs out instead: the row is only held until then
                log.exception("webhook delivery %s: not handed back", row.pk)
            return
        try:
            await record(self.settings, endpoint, row, lease, outcome, now)
        except Exception:
            # The lease runs out and another worker tries again (at least once).
            log.exception("webhook delivery %s: outcome not recorded", row.pk)


async def send_due(
    settings: Settings, client: httpx.AsyncClient, *, now: datetime | None = None
) -> int:
    """One fill of a fresh Sender, waited for: how many deliveries were claimed (tests, and
    anyone who wants the due ones sent now)."""
    sender = Sender(settings, client)
    started = await sender.fill(now)
    await sender.finish()
    return started


def next_attempt(schedule_start: int, attempts: int, now: datetime) -> datetime | None:
    """When a delivery is tried again after its `attempts`-th attempt failed; None: never
    (its schedule, counted from `schedule_start` attempts, is used up)."""
    failed_in_schedule = attempts - schedule_start
    if failed_in_schedule > len(RETRY_SCHEDULE):
        return None
    return now + RETRY_SCHEDULE[failed_in_schedule - 1]


async def record(
    settings: Settings,
    endpoint: WebhookEndpoint,
    row: WebhookDelivery,
    lease: datetime,
    outcome: requests.Outcome,
    now: datetime | None = None,
) -> bool:
    """Writes the attempt and the delivery's new state, if the claim still holds; False when
    another worker took the row meanwhile (nothing is written then). The retry follows the
    row as it is now: a redelivery during the POST gave it a fresh schedule."""
    now = now or datetime.now(UTC)
    async with in_transaction():
        current = (
            await WebhookDelivery.filter(id=row.pk, lease_until=lease).select_for_update().first()
        )
        if current is None:
            log.warning("webhook delivery %s: lease lost before the outcome was recorded", row.pk)
            return False
        attempts = current.attempts + 1
        retry_at = (
            None if outcome.succeeded else next_attempt(current.schedule_start, attempts, now)
        )
        if outcome.succeeded:
            status = WebhookDeliveryStatus.SUCCEEDED
        else:
            status = WebhookDeliveryStatus.PENDING if retry_at else WebhookDeliveryStatus.FAILED
        await WebhookDelivery.filter(id=row.pk, lease_until=lease).update(
            status=status,
            attempts=F("attempts") + 1,
            last_status_code=outcome.status_code,
            last_error=outcome.error,
            next_attempt_at=retry_at,
            lease_until=None,
        )
        await WebhookAttempt.create(
            delivery_id=row.pk,
            started_at=outcome.started_at,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            error=outcome.error,
            succeeded=outcome.succeeded,
        )
        if outcome.succeeded:
            await WebhookEndpoint.filter(id=endpoint.pk, failing_since__not_isnull=True).update(
                failing_since=None
            )
        else:
            await _count_failure(settings, endpoint, now)
    if outcome.succeeded:
        metrics.webhook_attempt(metrics.WEBHOOK_SUCCEEDED)
    else:
        metrics.webhook_attempt(metrics.WEBHOOK_RETRY if retry_at else metrics.WEBHOOK_FAILED)
    return True


async def _count_failure(settings: Settings, endpoint: WebhookEndpoint, now: datetime) -> None:
    """Marks since when the endpoint fails; disables it once that is DISABLE_AFTER ago."""
    await WebhookEndpoint.filter(id=endpoint.pk, failing_since__isnull=True).update(
        failing_since=now
    )
    since = await WebhookEndpoint.filter(id=endpoint.pk).values_list("failing_since", flat=True)
    if not since or since[0] is None or now - since[0] < DISABLE_AFTER:
        return
    reason = (
        f"Disabled by Portico on {now:%Y-%m-%d %H:%M} UTC: every delivery failed since "
        f"{since[0]:%Y-%m-%d %H:%M} UTC. Fix the receiver, then enable the endpoint again."
    )
    if await WebhookEndpoint.filter(id=endpoint.pk, enabled=True).update(
        enabled=False, disabled_reason=reason
    ):
        log.warning("webhook endpoint %s disabled after failing since %s", endpoint.pk, since[0])
        await _tell_admins(settings, endpoint, reason)


async def _tell_admins(settings: Settings, endpoint: WebhookEndpoint, reason: str) -> None:
    """One email to each owner and admin of the firm, queued in the caller's transaction."""
    firm = await Firm.get(pk=endpoint.firm_id)
    admins = await StaffMember.filter(
        firm_id=firm.pk, active=True, role__in=[StaffRole.OWNER, StaffRole.ADMIN]
    ).order_by("id")
    mails = [
        outbox.Mail(
            to=member.email,
            template="webhook_disabled",
            context={
                "member_name": member.name,
                "firm_name": firm.name,
                "url": endpoint.url,
                "reason": reason,
            },
            kind=DISABLED_KIND,
        )
        for member in admins
    ]
    await outbox.enqueue_many(firm.pk, firm.name, mails, settings)


ATTEMPT_LOG_SIZE = 50  # attempts shown per delivery, newest first


async def attempt_logs(
    firm_id: int, delivery_ids: Sequence[int], size: int = ATTEMPT_LOG_SIZE
) -> dict[int, list[WebhookAttempt]]:
    """The newest `size` attempts of each delivery of the firm, newest first: one SELECT for
    all of them (a page of deliveries)."""
    if not delivery_ids:
        return {}
    rows = await sql.select(
        "SELECT id, delivery_id, started_at, duration_ms, status_code, error, succeeded FROM ("
        " SELECT a.*, ROW_NUMBER() OVER (PARTITION BY a.delivery_id ORDER BY a.id DESC) AS n"
        " FROM webhook_attempt a JOIN webhook_delivery d ON d.id = a.delivery_id"
        f" WHERE d.firm_id = ? AND a.delivery_id IN ({sql.marks(len(delivery_ids))})"
        ") t WHERE n <= ? ORDER BY delivery_id, id DESC",
        [firm_id, *delivery_ids, size],
    )
    found: dict[int, list[WebhookAttempt]] = {pk: [] for pk in delivery_ids}
    for pk, delivery_id, started_at, duration_ms, status_code, error, succeeded in rows:
        found[delivery_id].append(
            WebhookAttempt(
                id=pk,
                delivery_id=delivery_id,
                started_at=sql.utc(started_at),
                duration_ms=duration_ms,
                status_code=status_code,
                error=error,
                succeeded=bool(succeeded),
            )
        )
    return found
