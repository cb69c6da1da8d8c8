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
    url: str  # ws://host:port/graphql
    token: str
    account: str | None  # the account filter's global id


@dataclass
class State:
    received: dict[str, list[str]] = field(default_factory=dict)
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    # subscriber: CLOCK_MONOTONIC of each (re)subscription after a lost connection
    resubscribed: dict[str, list[float]] = field(default_factory=dict)
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
    pipe.send(("result", state.received, state.arrivals, state.errors, state.resubscribed))


async def _subscriber(spec: Spec, state: State, ready: asyncio.Event, stop: asyncio.Event) -> None:
    state.received[spec.key] = []
    first = True
    while not stop.is_set():
        try:
            await _session(spec, state, ready, first)
        except asyncio.CancelledError:
            raise
        except (OSError, websockets.ConnectionClosed, TimeoutError) as exc:
            if first and not ready.is_set():
                state.errors.append(f"{spec.key}: could not subscribe: {exc!r}")
                ready.set()
                return
            # Lost (a server stopped): open again, on the same URL (it may come back) or,
            # while it is down, keep trying.
        except Exception as exc:  # a protocol surprise is a finding: stop this subscriber
            state.errors.append(f"{spec.key}: {exc!r}")
            ready.set()
            return
        first = False
        await asyncio.sleep(RECONNECT_PAUSE)


async def _session(spec: Spec, state: State, ready: asyncio.Event, first: bool) -> None:
    async with websockets.connect(
        spec.url,
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
        if not first:
            state.resubscribed.setdefault(spec.key, []).append(time.monotonic())
        ready.set()
        async for raw in ws:
            now = time.monotonic()
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "next":
                if message["payload"].get("errors"):
                    raise RuntimeError(f"error in next: {message}")
                synced = message["payload"]["data"]["messageSynced"]
                state.received[spec.key].append(synced["id"])
                state.arrivals.setdefault(synced["subject"], []).append(now)
            elif kind == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            elif kind == "pong":
                pass
            else:
                raise RuntimeError(f"unexpected message: {message}")
