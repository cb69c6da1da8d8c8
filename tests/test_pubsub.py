"""The event bus: fan-out, bounded queues, and Redis across buses and across processes.

No database: these tests run in the SQLite pass only. Redis tests skip without a Redis (fail
under PORTICO_REQUIRE_SERVICES=1) and use channels of their own, so parallel runs never meet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from portico.settings import Settings
from services.shared.pubsub import (
    InProcessBus,
    RedisBus,
    Subscription,
    bus_for,
    firm_channel,
)
from tests.support.api import eventually
from tests.support.services import need_redis

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0

MakeBus = Callable[..., RedisBus]


def unique_channel() -> str:
    return f"test:{uuid.uuid4().hex}"


async def receive(sub: Subscription) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        return await anext(sub)


@pytest.fixture
async def inprocess() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus()
    yield bus
    await bus.close()


@pytest.fixture
async def redis_buses() -> AsyncIterator[MakeBus]:
    """Makes RedisBus instances on the test Redis, closing them all afterwards."""
    url = need_redis()
    made: list[RedisBus] = []

    def make(**options: Any) -> RedisBus:
        bus = RedisBus(url, **options)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.close()


@pytest.fixture
async def redis_admin() -> AsyncIterator[Redis]:
    admin = Redis.from_url(need_redis())
    yield admin
    await admin.aclose()


async def listener_connections(admin: Redis, bus: RedisBus) -> list[dict[str, Any]]:
    return [c for c in await admin.client_list() if c.get("name") == bus.client_name]


# In process ---------------------------------------------------------------------------------


async def test_inprocess_fans_out_to_every_subscriber_of_the_channel(
    inprocess: InProcessBus,
) -> None:
    channel, other = unique_channel(), unique_channel()
    async with (
        inprocess.subscribe(channel) as a,
        inprocess.subscribe(channel) as b,
        inprocess.subscribe(channel) as c,
        inprocess.subscribe(other) as elsewhere,
    ):
        await inprocess.publish(channel, {"n": 1})
        await inprocess.publish(channel, {"n": 2})
        for sub in (a, b, c):
            assert [await receive(sub), await receive(sub)] == [{"n": 1}, {"n": 2}]
        assert elsewhere.pending == 0


async def test_inprocess_payload_is_a_json_copy(inprocess: InProcessBus) -> None:
    # The same shapes as through Redis, and the publisher's dict is not shared.
    channel = unique_channel()
    payload: dict[str, Any] = {"at": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), "ids": [1, 2]}
    async with inprocess.subscribe(channel) as sub:
        await inprocess.publish(channel, payload)
        payload["ids"].append(3)
        assert await receive(sub) == {"at": "2030-01-02T03:04:05+00:00", "ids": [1, 2]}
        with pytest.raises(TypeError):
            await inprocess.publish(channel, {"not json": object()})


async def test_inprocess_unsubscribes_when_the_block_exits(inprocess: InProcessBus) -> None:
    channel = unique_channel()
    async with inprocess.subscribe(channel) as kept:
        async with inprocess.subscribe(channel) as gone:
            assert inprocess.subscriber_count(channel) == 2
        assert inprocess.subscriber_count(channel) == 1
        await inprocess.publish(channel, {"n": 1})
        assert await receive(kept) == {"n": 1}
        assert gone.closed and gone.pending == 0
        assert [event async for event in gone] == []  # a closed subscription ends at once
    assert inprocess.subscriber_count(channel) == 0


async def test_a_subscriber_that_never_reads_delays_nobody(
    inprocess: InProcessBus, caplog: pytest.LogCaptureFixture
) -> None:
    channel = unique_channel()
    count = 50
    received: list[int] = []
    async with (
        inprocess.subscribe(channel, max_queue=2) as stuck,
        inprocess.subscribe(channel) as fast,
    ):

        async def read_fast() -> None:
            async for event in fast:
                received.append(event["n"])
                if len(received) == count:
                    return

        reader = asyncio.create_task(read_fast())
        with caplog.at_level(logging.WARNING, logger="services.shared.pubsub"):
            started = time.monotonic()
            for n in range(count):
                await inprocess.publish(channel, {"n": n})
                await asyncio.sleep(0)  # let the fast reader keep up
            assert time.monotonic() - started < 1.0
        async with asyncio.timeout(TIMEOUT):
            await reader

        assert received == list(range(count))
        assert fast.dropped == 0
        assert stuck.pending == 2 and stuck.dropped == count - 2
        assert inprocess.dropped == count - 2
        # Rate-limited: one warning for the whole burst, not one per missed event.
        warnings = [r for r in caplog.records if "too slow" in r.getMessage()]
        assert len(warnings) == 1
        # What it did keep is the oldest, still readable.
        assert [await receive(stuck), await receive(stuck)] == [{"n": 0}, {"n": 1}]


async def test_close_ends_open_subscriptions_and_ignores_later_publishes() -> None:
    bus = InProcessBus()
    channel = unique_channel()
    async with bus.subscribe(channel) as sub:
        await bus.publish(channel, {"n": 1})
        await bus.close()
        await bus.publish(channel, {"n": 2})
        assert [event async for event in sub] == [{"n": 1}]
    with pytest.raises(RuntimeError):
        async with bus.subscribe(channel):
            pass


def test_queue_must_hold_something() -> None:
    with pytest.raises(ValueError):
        Subscription("x", 0)


async def test_bus_for_picks_redis_only_when_configured(tmp_path: Path) -> None:
    plain = bus_for(Settings(var_dir=tmp_path, redis_url=None, _env_file=None))
    assert isinstance(plain, InProcessBus)
    redis_bus = bus_for(
        Settings(var_dir=tmp_path, redis_url="redis://127.0.0.1:1/0", _env_file=None)
    )
    assert isinstance(redis_bus, RedisBus)  # lazy: nothing connects before first use
    await plain.close()
    await redis_bus.close()


def test_firm_channel() -> None:
    assert firm_channel(42) == "firm:42"


# Redis --------------------------------------------------------------------------------------


async def test_redis_fans_out_across_buses_over_one_connection(
    redis_buses: MakeBus, redis_admin: Redis
) -> None:
    here, there = redis_buses(), redis_buses()
    channel = unique_channel()
    async with (
        here.subscribe(channel) as a,
        here.subscribe(channel) as b,
        there.subscribe(channel) as c,
    ):
        # Two local subscribers, one Redis connection subscribed once.
        [conn] = await listener_connections(redis_admin, here)
        assert conn["sub"] == "1"

        await there.publish(channel, {"n": 1, "from": "there"})
        await here.publish(channel, {"n": 2, "from": "here"})
        for sub in (a, b, c):
            assert await receive(sub) == {"n": 1, "from": "there"}
            assert await receive(sub) == {"n": 2, "from": "here"}

    # The last local subscriber gone, the connection unsubscribes (and stays, for later ones).
    async def unsubscribed() -> bool:
        conns = await listener_connections(redis_admin, here)
        return len(conns) == 1 and conns[0]["sub"] == "0"

    await eventually(unsubscribed)
    assert here.subscriber_count(channel) == 0


async def test_redis_slow_subscriber_misses_events_not_the_others(
    redis_buses: MakeBus,
) -> None:
    bus = redis_buses()
    channel = unique_channel()
    async with bus.subscribe(channel, max_queue=1) as stuck, bus.subscribe(channel) as fast:
        for n in range(5):
            await bus.publish(channel, {"n": n})
        assert [(await receive(fast))["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
        assert stuck.pending == 1 and stuck.dropped == 4
        assert bus.dropped == 4


async def test_redis_reconnects_after_the_connection_drops(
    redis_buses: MakeBus, redis_admin: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    bus = redis_buses(backoff_min=0.05)
    channel = unique_channel()
    async with bus.subscribe(channel) as sub:
        [conn] = await listener_connections(redis_admin, bus)
        with caplog.at_level(logging.WARNING, logger="services.shared.pubsub"):
            await redis_admin.client_kill_filter(_id=conn["id"])
            await eventually(lambda: bus.reconnects >= 1 and bus.connected)
        assert any("connection lost" in r.getMessage() for r in caplog.records)

        # Resubscribed on the new connection: a new event arrives.
        async def resubscribed() -> bool:
            conns = await listener_connections(redis_admin, bus)
            return len(conns) == 1 and conns[0]["id"] != conn["id"] and conns[0]["sub"] == "1"

        await eventually(resubscribed)
        await bus.publish(channel, {"after": "reconnect"})
        assert await receive(sub) == {"after": "reconnect"}


async def test_redis_unreachable_never_raises_into_the_app(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Port 1: connection refused at once. Publishing drops the event and logs; subscribing
    # waits for the (short) confirmation timeout and then yields a quiet subscription.
    bus = RedisBus("redis://127.0.0.1:1/0", confirm_timeout=0.2, backoff_min=0.05)
    channel = unique_channel()
    try:
        with caplog.at_level(logging.WARNING, logger="services.shared.pubsub"):
            await bus.publish(channel, {"n": 1})
            assert bus.publish_failures == 1
            async with bus.subscribe(channel) as sub:
                assert sub.pending == 0
                await eventually(lambda: bus.reconnects >= 2)
        assert any("could not publish" in r.getMessage() for r in caplog.records)
    finally:
        await bus.close()


PUBLISHER = textwrap.dedent(
    """
    import asyncio, os, sys

    from services.shared.pubsub import RedisBus


    async def main() -> None:
        bus = RedisBus(sys.argv[1])
        await bus.publish(sys.argv[2], {"from": "subprocess", "pid": os.getpid()})
        await bus.close()
        assert bus.publish_failures == 0, "publish failed"


    asyncio.run(main())
    """
)


async def test_an_event_published_in_another_process_arrives(
    redis_buses: MakeBus, tmp_path: Path
) -> None:
    url = need_redis()
    bus = redis_buses()
    channel = unique_channel()
    script = tmp_path / "publish.py"
    script.write_text(PUBLISHER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    async with bus.subscribe(channel) as sub:  # entered once Redis confirmed the SUBSCRIBE
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            url,
            channel,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(TIMEOUT):
                out, err = await child.communicate()
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        assert child.returncode == 0, (out + err).decode()
        event = await receive(sub)
    assert event["from"] == "subprocess"
    assert event["pid"] == child.pid != os.getpid()


async def test_redis_idle_connection_stays_up_between_pings(
    redis_buses: MakeBus,
) -> None:
    bus = redis_buses(ping_interval=0.05)
    channel = unique_channel()
    async with bus.subscribe(channel) as sub:
        await asyncio.sleep(0.5)  # several PING round trips, no traffic otherwise
        assert bus.reconnects == 0 and bus.connected
        await bus.publish(channel, {"n": 1})
        assert await receive(sub) == {"n": 1}


async def test_a_subscriber_cancelled_while_it_subscribes_does_not_listen_on(
    redis_buses: MakeBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscriber (a fanout group whose last member left, a completed operation) cancelled
    while its SUBSCRIBE is written ends, whenever the write finishes: redis-py writes under
    asyncio.wait_for, which on Python 3.11 drops a cancellation that comes in the turn the
    write finishes, and the task used to enter and listen for good."""
    bus = redis_buses()
    async with bus.subscribe(unique_channel()):  # the listener is connected
        writing = asyncio.Event()
        subscribe = PubSub.subscribe

        async def watched(self: PubSub, *args: Any, **kwargs: Any) -> Any:
            writing.set()
            return await subscribe(self, *args, **kwargs)

        monkeypatch.setattr(PubSub, "subscribe", watched)
        for turns in range(6):  # the cancellation before, as and after the write finishes
            channel = unique_channel()
            writing.clear()

            async def listen(channel: str = channel) -> None:
                async with bus.subscribe(channel) as sub:
                    await anext(sub)  # reached when Redis confirmed before the cancel

            task = asyncio.create_task(listen())
            await asyncio.wait_for(writing.wait(), 5)
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5)
            assert done and task.cancelled(), f"after {turns} turns: still listening"
            assert bus.subscriber_count(channel) == 0


async def test_redis_subscription_churn_leaves_the_right_state(
    redis_buses: MakeBus, redis_admin: Redis
) -> None:
    # Subscribing and leaving in quick succession, from many tasks at once: whatever order
    # the SUBSCRIBE/UNSUBSCRIBE replies come in, the last subscriber is live.
    bus = redis_buses()
    channel = unique_channel()

    async def come_and_go() -> None:
        for _ in range(10):
            async with bus.subscribe(channel):
                await asyncio.sleep(0)

    await asyncio.gather(*(come_and_go() for _ in range(5)))
    async with bus.subscribe(channel) as sub:
        [conn] = await listener_connections(redis_admin, bus)
        assert conn["sub"] == "1"
        await bus.publish(channel, {"n": 1})
        assert await receive(sub) == {"n": 1}
