"""The load test's live subscribers: a process of their own (their frames are not the
load driver's CPU), each subscriber one graphql-transport-ws connection.

Talks to the bench through a pipe: -> ("subscribed", errors) once every subscription is
sent; <- "stop"; -> ("result", received, arrivals, errors, reconnects) where received maps
each subscriber to the message ids it got, in order, and arrivals each subject to the
CLOCK_MONOTONIC times it arrived (the same clock in every process).

A connection that closes is opened again and subscribes again (counted): events published
while it was away are not replayed (the bus is at most once), so the bench counts only
what each subscriber may see from the moment its latest subscription was acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import websockets

SUBSCRIBE = """subscription Live($a: ID) { messageSynced(accountId: $a) { id subject } }"""
CONNECT_BATCH = 50
RECONNECT_PAUSE = 0.5


@dataclass(frozen=True)
class Spec:
    key: str
    urls: tuple[str, ...]  # ws://host:port/graphql: the first, then the others in turn
    token: str
    account: str | None  # the account filter's global id


@dataclass
class State:
    received: dict[str, list[str]] = field(default_factory=dict)
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    # subscriber: (lost, subscribed again) in CLOCK_MONOTONIC, per lost connection
    gaps: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # (CLOCK_MONOTONIC, how): each connection the server ended ("1012 ..."; "no close frame")
    closes: list[tuple[float, str]] = field(default_factory=list)
    # (CLOCK_MONOTONIC, subscriber, message): an error or complete for the subscription; the
    # subscriber connects again (the bench decides whether the moment excuses it)
    refusals: list[tuple[float, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run(specs: list[Spec], pipe: Connection) -> None:
    logging.disable(logging.INFO)
    asyncio.run(_main(specs, pipe))


async def _main(specs: list[Spec], pipe: Connection) -> None:
    state = State()
    stop = asyncio.Event()
    tasks = []
    for start in range(0, len(specs), CONNECT_BATCH):
        batch = specs[start : start + CONNECT_BATCH]
        ready = [asyncio.Event() for _ in batch]
        tasks += [
            asyncio.create_task(_subscriber(spec, state, ready[i], stop))
            for i, spec in enumerate(batch)
        ]
        await asyncio.gather(*(r.wait() for r in ready))
    pipe.send(("subscribed", list(state.errors)))
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, pipe.recv) != "stop":
        pass
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(
        (
            "result",
            state.received,
            state.arrivals,
            state.errors,
            state.gaps,
            state.closes,
            state.refusals,
        )
    )


async def _subscriber(spec: Spec, state: State, ready: asyncio.Event, stop: asyncio.Event) -> None:
    state.received[spec.key] = []
    attempt = 0
    lost: float | None = None  # when the latest subscribed connection was lost
    subscribed = [False]  # whether the connection of this attempt got as far as subscribing
    while not stop.is_set():
        url = spec.urls[attempt % len(spec.urls)]  # the next server, as a balancer would
        subscribed[0] = False
        try:
            await _session(spec, url, state, ready, lost, subscribed)
        except asyncio.CancelledError:
            raise
        except websockets.ConnectionClosed as exc:
            how = _close_text(exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else "no close frame"
            state.closes.append((time.monotonic(), how))
        except Refused as exc:
            state.refusals.append((time.monotonic(), spec.key, str(exc)[:300]))
        except (OSError, TimeoutError) as exc:
            if not ready.is_set():
                state.errors.append(f"{spec.key}: could not subscribe: {exc!r}")
                ready.set()
                return
        except Exception as exc:  # a protocol surprise is a finding: stop this subscriber
            state.errors.append(f"{spec.key}: {exc!r}")
            ready.set()
            return
        if subscribed[0]:
            lost = time.monotonic()
        attempt += 1
        await asyncio.sleep(RECONNECT_PAUSE)


class Refused(Exception):
    """The server ended the subscription (`error`, `complete`, or errors in `next`)."""


def _close_text(code: int | None, reason: str) -> str:
    return f"{code} {reason}".strip()


async def _session(
    spec: Spec,
    url: str,
    state: State,
    ready: asyncio.Event,
    lost: float | None,
    subscribed: list[bool],
) -> None:
    """One connection; `lost`: when the previous subscribed one was lost (None: none was)."""
    async with websockets.connect(
        url,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        max_queue=None,
        open_timeout=60,
        ping_interval=None,  # 500 clients' pings would be load of their own
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": spec.token}}))
        acked = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if acked.get("type") != "connection_ack":
            raise RuntimeError(f"no ack: {acked}")
        payload = {"query": SUBSCRIBE, "variables": {"a": spec.account}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        if lost is not None:
            state.gaps.setdefault(spec.key, []).append((lost, time.monotonic()))
        subscribed[0] = True
        ready.set()
        async for raw in ws:
            now = time.monotonic()
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "next":
                if message["payload"].get("errors"):
                    raise Refused(f"errors in next: {message}")
                synced = message["payload"]["data"]["messageSynced"]
                state.received[spec.key].append(synced["id"])
                state.arrivals.setdefault(synced["subject"], []).append(now)
            elif kind == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            elif kind == "pong":
                pass
            elif kind in ("error", "complete"):
                raise Refused(str(message))
            else:
                raise RuntimeError(f"unexpected message: {message}")
        # The server closed the connection cleanly (iteration ends without an exception).
        state.closes.append((time.monotonic(), _close_text(ws.close_code, ws.close_reason or "")))
