"""Token buckets for rate limits. A key holds up to `burst` tokens and gains `rate` a second;
each request takes one, or learns how long until one is there. The buckets live in this
process's memory, or in Redis so that every API process counts against the same ones."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("portico.rate_limit")


@dataclass(frozen=True)
class BucketPolicy:
    rate: float  # tokens gained a second
    burst: int  # the most a bucket holds: a full one allows this many requests at once


class Buckets(Protocol):
    async def take(self, key: str, policy: BucketPolicy) -> float:
        """Takes a token from `key`'s bucket: 0.0 when there was one, else the seconds until
        there is (nothing taken)."""
        ...

    async def aclose(self) -> None: ...


def refill(tokens: float, elapsed: float, policy: BucketPolicy) -> tuple[float, float]:
    """A bucket of `tokens` after `elapsed` seconds, then asked for one: (tokens left, wait)."""
    tokens = min(float(policy.burst), tokens + max(0.0, elapsed) * policy.rate)
    if tokens >= 1:
        return tokens - 1, 0.0
    return tokens, (1 - tokens) / policy.rate


class MemoryBuckets:
    """This process's buckets, at most `max_keys` of them: the one unused for longest goes
    first (a bucket left alone for burst/rate seconds is full anyway), so a flood of new
    addresses costs bounded memory."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, key: str, policy: BucketPolicy) -> float:
        now = time.monotonic()
        tokens, stamp = self._buckets.pop(key, (float(policy.burst), now))
        tokens, wait = refill(tokens, now - stamp, policy)
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    async def aclose(self) -> None:
        self._buckets.clear()


# The same arithmetic as `refill`, atomic in Redis, on Redis's clock (API hosts' clocks may
# differ). A bucket expires once it would be full again. The wait goes back as a string: Redis
# turns a Lua number into an integer.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(saved[1]) or burst
local stamp = tonumber(saved[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return tostring(wait)
"""

# A Redis that fails or does not answer within the timeout leaves each process counting on its
# own (memory buckets) for a few seconds: an outage of Redis must not become an outage of the
# API, nor turn the limits off, nor cost every request the timeout. Said at most once a minute.
REDIS_TIMEOUT_SECONDS = 0.5
REDIS_PAUSE_SECONDS = 5.0
_WARN_EVERY_SECONDS = 60.0


class RedisBuckets:
    """Buckets shared by every process on one Redis, under `prefix`."""

    def __init__(self, url: str, prefix: str = "portico:rate:") -> None:
        self.prefix = prefix
        self._redis = Redis.from_url(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        self._take = self._redis.register_script(_TAKE)
        self._local = MemoryBuckets()
        self._paused_until = 0.0
        self._warned_at = -_WARN_EVERY_SECONDS

    async def take(self, key: str, policy: BucketPolicy) -> float:
        if time.monotonic() < self._paused_until:
            return await self._local.take(key, policy)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                wait = await self._take(keys=[self.prefix + key], args=[policy.rate, policy.burst])
        except (RedisError, OSError, TimeoutError) as exc:
            self._pause(exc)
            return await self._local.take(key, policy)
        return float(wait)

    def _pause(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._paused_until = now + REDIS_PAUSE_SECONDS
        if now - self._warned_at >= _WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning(
                "rate limits counted per process for %.0f s: Redis failed (%s)",
                REDIS_PAUSE_SECONDS,
                type(exc).__name__,
            )

    async def aclose(self) -> None:
        await self._redis.aclose()
