"""The event bus: live events (mail just synced, …) from whoever raises them to every subscriber.

Usage:

    bus = bus_for(settings)                        # once per process; close() at shutdown
    await bus.publish(firm_channel(firm.id), {"kind": "message.synced", "messageId": 7})

    async with bus.subscribe(firm_channel(firm.id), max_queue=100) as events:
        async for event in events:                 # dicts, as published (a JSON round trip)
            ...

Two backends, one behaviour:
- InProcessBus (the embedded default): fan-out to the subscribers of this process only.
- RedisBus(url) (PORTICO_REDIS_URL set): PUBLISH/SUBSCRIBE through Redis, so an event raised in
  any process reaches the subscribers of every process. Each process holds ONE subscriber
  connection, subscribed once to each channel that has local subscribers, and fans each
  message out locally; publishing uses a separate small pool.

Every subscription has a bounded queue. Delivering never waits: when a subscriber's queue is
full, that subscriber misses the event (counted in `Subscription.dropped` and the bus's
`dropped`, logged at warning at most every DROP_LOG_SECONDS), so a slow WebSocket client never
delays the publisher or the other subscribers.

Delivery is at most once, best effort: an event is a hint that something changed, the database
is the record. Events published while a process's Redis connection is down are missed by that
process's subscribers (the bus reconnects with backoff and logs, and never raises into the
app); clients refetch what they show when they need to be exact.

Lag: each event carries its publish time (wall clock) under PUBLISHED_AT on the wire; the
receiving process takes it out before its subscribers see the event (they get exactly what
was published) and observes the difference in EVENT_BUS_LAG (services/shared/metrics), once
per event and process. An event without it (a process of an older version) is delivered
all the same and not observed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError

from portico.settings import Settings
from services.shared.metrics import EVENT_BUS_LAG

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 100
DROP_LOG_SECONDS = 10.0  # at most one "subscriber too slow" warning per bus per interval
PUBLISH_LOG_SECONDS = 10.0  # the same for "could not publish" while Redis is down

Payload = dict[str, Any]

# The bus's own key in an event's JSON object: when it was published (Unix seconds).
PUBLISHED_AT = "_publishedAt"


def _encode(payload: Payload) -> bytes:
    """The event on the wire: its JSON object with its publish time added."""
    if PUBLISHED_AT in payload:
        raise ValueError(f"{PUBLISHED_AT} is the event bus's own key")
    return orjson.dumps({**payload, PUBLISHED_AT: time.time()})


def _received(payload: Payload) -> Payload:
    """The event as published: its publish time taken out, and its lag observed."""
    published = payload.pop(PUBLISHED_AT, None)
    if type(published) in (int, float):  # never a bool, a string or null: not ours
        # Clocks of two hosts may differ a little: an event never arrives before it left.
        EVENT_BUS_LAG.observe(max(0.0, time.time() - published))
    return payload


def firm_channel(firm_id: int | str) -> str:
    """The channel of one firm's events (EMAIL SYNC: a message synced for one of its accounts).

    Subscribers filter by what their viewer may see; the channel only keeps firms apart.
    """
    return f"firm:{firm_id}"


class Subscription:
    """One subscriber: a bounded queue of events, read with `async for` (or `anext`).

    Iteration ends once the subscription is closed (its `subscribe()` block exited, or the bus
    closed) and what was already queued has been read. Payloads are shared by all the
    subscribers of an event: treat them as read-only.
    """

    def __init__(self, channel: str, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.channel = channel
        self.max_queue = max_queue
        self.dropped = 0  # events this subscriber missed because its queue was full
        self._items: deque[Payload] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def pending(self) -> int:
        """Events queued and not read yet."""
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def _offer(self, payload: Payload) -> bool:
        """Queue the event without waiting; False when it was dropped (queue full)."""
        if self._closed:
            return True  # nobody reads any more: not a miss worth reporting
        if len(self._items) >= self.max_queue:
            self.dropped += 1
            return False
        self._items.append(payload)
        self._wakeup.set()
        return True

    def _close(self) -> None:
        self._closed = True
        self._wakeup.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Payload:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()


class EventBus(Protocol):
    """What the rest of Portico sees of either backend."""

    async def publish(self, channel: str, payload: Payload) -> None:
        """Send `payload` (JSON-serialisable; orjson raises TypeError otherwise) to `channel`;
        it may not use the key PUBLISHED_AT (ValueError).

        Never waits on subscribers, and never raises because Redis is unreachable (it logs).
        """
        ...

    def subscribe(
        self, channel: str, *, max_queue: int = DEFAULT_MAX_QUEUE
    ) -> AbstractAsyncContextManager[Subscription]:
        """Receive `channel`'s events from the moment the block is entered until it exits."""
        ...

    async def close(self) -> None:
        """Shut down: open subscriptions end their iteration; later publishes are ignored."""
        ...


class _RateLimited:
    """A warning logged at most once per interval, with how many were held back."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = -float("inf")
        self._held = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._held += 1
            return
        if self._held:
            message += " (%d similar warnings held back)"
            args = (*args, self._held)
        self._last, self._held = now, 0
        log.warning(message, *args)


class _Fanout:
    """This process's subscriptions by channel; delivery to each one's queue without waiting."""

    def __init__(self) -> None:
        self._by_channel: dict[str, set[Subscription]] = {}
        self.dropped = 0
        self._drop_log = _RateLimited(DROP_LOG_SECONDS)

    def add(self, sub: Subscription) -> None:
        self._by_channel.setdefault(sub.channel, set()).add(sub)

    def remove(self, sub: Subscription) -> None:
        subs = self._by_channel.get(sub.channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_channel[sub.channel]

    def count(self, channel: str) -> int:
        return len(self._by_channel.get(channel, ()))

    def channels(self) -> list[str]:
        return list(self._by_channel)

    def deliver(self, channel: str, payload: Payload) -> None:
        for sub in tuple(self._by_channel.get(channel, ())):
            if not sub._offer(payload):
                self.dropped += 1
                self._drop_log.warning(
                    "pubsub: a subscriber of %s is too slow (%d queued): it missed an event "
                    "(%d missed by it, %d by all subscribers of this process)",
                    channel,
                    sub.max_queue,
                    sub.dropped,
                    self.dropped,
                )

    def close_all(self) -> None:
        for subs in self._by_channel.values():
            for sub in subs:
                sub._close()


class InProcessBus:
    """Fan-out inside this process (the embedded default: one process serves everything)."""

    def __init__(self) -> None:
        self._subs = _Fanout()
        self._closed = False

    @property
    def dropped(self) -> int:
        return self._subs.dropped

    def subscriber_count(self, channel: str) -> int:
        return self._subs.count(channel)

    async def publish(self, channel: str, payload: Payload) -> None:
        if self._closed:
            log.debug("pubsub: closed, event on %s ignored", channel)
            return
        # A JSON round trip, as through Redis: a payload that is not JSON fails here too,
        # subscribers see the same shapes (datetimes as strings) on both backends, and the
        # publisher's dict is never shared with them.
        data = _encode(payload)
        if self._subs.count(channel):
            self._subs.deliver(channel, _received(orjson.loads(data)))

    @asynccontextmanager
    async def subscribe(
        self, channel: str, *, max_queue: int = DEFAULT_MAX_QUEUE
    ) -> AsyncIterator[Subscription]:
        if self._closed:
            raise RuntimeError("the event bus is closed")
        sub = Subscription(channel, max_queue)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.remove(sub)
            sub._close()

    async def close(self) -> None:
        self._closed = True
        self._subs.close_all()


class RedisBus:
    """Fan-out through Redis PUBLISH/SUBSCRIBE: every process's subscribers get every event.

    One listener task per process owns the subscriber connection: it (re)connects with
    exponential backoff, subscribes to every channel that has local subscribers, PINGs a
    connection idle for `ping_interval` (no answer within another interval counts as a drop),
    and hands each message to the local subscribers' queues. Nothing is opened before the
    first subscribe or publish.
    """

    def __init__(
        self,
        url: str,
        *,
        client_name: str | None = None,
        confirm_timeout: float = 5.0,
        ping_interval: float = 15.0,
        backoff_min: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.url = url
        # Names the subscriber connection in CLIENT LIST (ops, and the tests find it by name).
        self.client_name = client_name or f"portico-pubsub-{os.getpid()}-{secrets.token_hex(3)}"
        self.confirm_timeout = confirm_timeout
        self.ping_interval = ping_interval
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.reconnects = 0  # subscriber connections lost, and attempts that failed
        self.publish_failures = 0
        # Publishing: short timeouts and retries, so a Redis outage costs a publisher (the sync
        # worker) a few seconds at most, never a hang.
        self._publisher = Redis.from_url(
            url,
            socket_connect_timeout=2,
            socket_timeout=5,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        )
        # Listening: no retries inside redis-py; the listener reconnects itself, so there is
        # one place that knows which channels the live connection is subscribed to.
        self._listener = Redis.from_url(
            url,
            client_name=self.client_name,
            socket_connect_timeout=5,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),
        )
        self._subs = _Fanout()
        self._publish_log = _RateLimited(PUBLISH_LOG_SECONDS)
        # Guards the live connection and its subscription state, so SUBSCRIBE/UNSUBSCRIBE
        # commands go out in the order the local subscriptions changed.
        self._lock = asyncio.Lock()
        self._pubsub: PubSub | None = None  # the live subscriber connection; None while down
        self._remote: set[str] = set()  # channels SUBSCRIBEd on the live connection
        self._unacked: dict[str, int] = {}  # (UN)SUBSCRIBE replies still to come, per channel
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def dropped(self) -> int:
        return self._subs.dropped

    @property
    def connected(self) -> bool:
        return self._pubsub is not None

    def subscriber_count(self, channel: str) -> int:
        return self._subs.count(channel)

    async def publish(self, channel: str, payload: Payload) -> None:
        if self._closed:
            log.debug("pubsub: closed, event on %s ignored", channel)
            return
        data = _encode(payload)  # outside the try: a payload that is not JSON is a bug
        try:
            await self._publisher.publish(channel, data)
        except (RedisError, OSError) as exc:
            self.publish_failures += 1
            self._publish_log.warning(
                "pubsub: could not publish on %s through Redis (%s): event dropped", channel, exc
            )

    @asynccontextmanager
    async def subscribe(
        self, channel: str, *, max_queue: int = DEFAULT_MAX_QUEUE
    ) -> AsyncIterator[Subscription]:
        if self._closed:
            raise RuntimeError("the event bus is closed")
        sub = Subscription(channel, max_queue)
        self._subs.add(sub)
        try:
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._listen(), name="portico-pubsub-listener")
            await self._sync(channel)
            # Entered only once Redis confirms the SUBSCRIBE: an event published anywhere
            # after this point reaches this subscriber.
            await self._wait_confirmed(channel)
            # On Python 3.11 asyncio.wait_for (redis-py's writes, the wait above) returns
            # what finished in the turn it was cancelled and drops the cancellation: a
            # subscriber cancelled meanwhile (an operation completed) must not enter.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            yield sub
        finally:
            self._subs.remove(sub)
            sub._close()
            await self._sync(channel)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._subs.close_all()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_result(None)
        await self._listener.aclose()
        await self._publisher.aclose()

    # The subscriber connection -------------------------------------------------------------

    async def _sync(self, channel: str) -> None:
        """Make the live connection's subscription to `channel` match the local subscribers."""
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None:
                return  # down: the next connection subscribes to every channel still wanted
            wanted = self._subs.count(channel) > 0
            try:
                if wanted and channel not in self._remote:
                    self._remote.add(channel)
                    self._unacked[channel] = self._unacked.get(channel, 0) + 1
                    await pubsub.subscribe(channel)
                elif not wanted and channel in self._remote:
                    self._remote.discard(channel)
                    self._unacked[channel] = self._unacked.get(channel, 0) + 1
                    await pubsub.unsubscribe(channel)
            except (RedisError, OSError) as exc:
                # The connection is broken: close it, so the listener notices and reconnects.
                log.warning("pubsub: Redis connection failed (%s); reconnecting", exc)
                self._pubsub = None
                await _close_quietly(pubsub)

    def _confirmed(self, channel: str) -> bool:
        return channel in self._remote and not self._unacked.get(channel)

    async def _wait_confirmed(self, channel: str) -> None:
        if self._confirmed(channel):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(future)
        try:
            await asyncio.wait_for(future, self.confirm_timeout)
        except TimeoutError:
            # Not fatal: the subscription goes live when Redis is back; until then it is quiet.
            log.warning(
                "pubsub: Redis has not confirmed the subscription to %s within %.1f s",
                channel,
                self.confirm_timeout,
            )
        finally:
            waiters = self._waiters.get(channel, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(channel, None)

    def _wake_waiters(self, channel: str) -> None:
        if self._confirmed(channel):
            for future in self._waiters.pop(channel, []):
                if not future.done():
                    future.set_result(None)

    async def _listen(self) -> None:
        """The listener task: connect, read, and on any failure reconnect with backoff."""
        delay = self.backoff_min
        while not self._closed:
            pubsub = self._listener.pubsub()
            try:
                await self._connect(pubsub)
                if self.reconnects:
                    log.info("pubsub: Redis connection restored")
                delay = self.backoff_min
                await self._read(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the listener die: the app must not notice
                if self._closed:
                    break
                self.reconnects += 1
                log.warning(
                    "pubsub: Redis connection lost or refused (%s: %s); retrying in %.1f s",
                    type(exc).__name__,
                    exc,
                    delay,
                )
            finally:
                async with self._lock:
                    if self._pubsub is pubsub:
                        self._pubsub = None
                await _close_quietly(pubsub)
            # Jitter spreads the reconnections of many processes after a Redis restart.
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.backoff_max)

    async def _connect(self, pubsub: PubSub) -> None:
        await pubsub.connect()
        async with self._lock:
            channels = self._subs.channels()
            self._remote = set(channels)
            self._unacked = dict.fromkeys(channels, 1)
            if channels:
                await pubsub.subscribe(*channels)
            self._pubsub = pubsub

    async def _read(self, pubsub: PubSub) -> None:
        ping_unanswered = False
        while True:
            message = await pubsub.get_message(timeout=self.ping_interval)
            if self._pubsub is not pubsub:
                raise ConnectionError("the subscriber connection was closed")
            if message is None:
                # Idle for a whole interval: PING; silence for another one means a dead peer
                # (a vanished host sends no FIN, and TCP keepalive takes hours to tell).
                if ping_unanswered:
                    raise ConnectionError(f"no answer to PING within {self.ping_interval} s")
                await pubsub.ping()
                ping_unanswered = True
                continue
            ping_unanswered = False
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pong":
            return
        raw_channel = message["channel"]
        channel = raw_channel.decode() if isinstance(raw_channel, bytes) else str(raw_channel)
        if kind == "message":
            try:
                payload = orjson.loads(message["data"])
            except orjson.JSONDecodeError:
                log.warning("pubsub: a message on %s is not JSON; ignored", channel)
                return
            if not isinstance(payload, dict):
                log.warning("pubsub: a message on %s is not a JSON object; ignored", channel)
                return
            self._subs.deliver(channel, _received(payload))
        elif kind in ("subscribe", "unsubscribe"):
            # Replies come in the order the commands went out: when none is left to come, the
            # connection's state for the channel is the one _remote says.
            left = self._unacked.get(channel, 0) - 1
            if left > 0:
                self._unacked[channel] = left
            else:
                self._unacked.pop(channel, None)
            self._wake_waiters(channel)


async def _close_quietly(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()
    except Exception as exc:  # closing a broken connection may fail too; it is gone anyway
        log.debug("pubsub: closing the subscriber connection: %s", exc)


def bus_for(settings: Settings) -> EventBus:
    """Redis when PORTICO_REDIS_URL is set (several processes), else this process only."""
    if settings.redis_url:
        return RedisBus(settings.redis_url)
    return InProcessBus()
