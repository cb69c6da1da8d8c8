"""The load test's restarts (issue 15 item 7), one after another while the load runs:

1. an API process is taken out of the balancer's rotation and sent SIGTERM READ_DELAY later
   (the requests already sent to it must be answered; its WebSocket clients are closed,
   1012, and connect again through the balancer), then started again on its port and put
   back;
2. a worker is killed (SIGKILL), during a sync pass where one is caught, and started again
   after a pause: a mailbox whose pass it was running waits for the pass's lease to run
   out (15 minutes: the run then fails, naming the lease); rows it had claimed are
   retried once their lease (PORTICO_MAIL_LEASE_SECONDS, short in the bench) runs out, so a
   message it sent but could not mark may arrive twice (at least once: docs/decisions);
3. the bench's own Redis is stopped and started again: events published meanwhile are lost
   (the bus is at most once), the bus reconnects, nothing else may fail;
4. the bench's own PostgreSQL cluster is stopped (fast) and started again, Portico not
   restarted: meanwhile requests must fail fast with 503 (anything else is an error), and
   afterwards everything works again.

Each records its moments (CLOCK_MONOTONIC) so the account can tell what may be missed: the
mail arriving around a restart (BEFORE and AFTER it) is owed to no subscriber, but
may still be received once, never twice.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field

from bench import load_procs
from bench.load_actors import SIGN_IN, Api, Recorder
from bench.load_postgres import Cluster

# Mail appended this long before a restart may have its event lost (being synced, or in
# flight), and this long after it (the bus and subscriptions coming back).
BEFORE = 5.0
AFTER = 5.0
PAUSE = 3.0  # seconds a stopped process or Redis stays down
LEASE_WAIT = 10.0  # seconds to wait for a sync pass in progress before killing a worker
BURST = 8  # requests sent to the API process just before its SIGTERM, all to be answered
# Between leaving the rotation and SIGTERM (a balancer's deregistration delay): uvicorn's
# shutdown closes every connection whose request it has not read yet, so a request sent a
# moment before the signal gets no answer at all (2 of 8 sent 50 ms before it, and 2 of 8
# sent 0.3 s before it while the 2 cores were saturated).
READ_DELAY = 1.0


@dataclass
class Restarts:
    api_stops: int = 0
    worker_kills: int = 0
    redis_restarts: int = 0
    postgres_restarts: int = 0
    # time.time() of the database's outages (and AFTER): log lines then are expected
    wall_outages: list[tuple[float, float]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # what happened, for the report
    windows: list[tuple[float, float]] = field(default_factory=list)  # for every subscriber
    # when a worker was killed, or the database went away and came back: a message sent
    # but not yet marked may be sent again across these moments
    kills: list[float] = field(default_factory=list)
    kill_names: list[str] = field(default_factory=list)  # what each of `kills` was
    # (what, from, until): each restart, for naming what happened during it
    named: list[tuple[str, float, float]] = field(default_factory=list)

    def during(self, at: float) -> str | None:
        """The restart `at` falls in (AFTER included), if any."""
        for what, start, end in self.named:
            if start - 0.5 <= at <= end + AFTER:
                return what
        return None

    def excused(self, at: float) -> bool:
        return any(start - BEFORE <= at <= end + AFTER for start, end in self.windows)


async def run(
    restarts: Restarts,
    api: Api,
    apis: list[load_procs.Proc],
    workers: list[load_procs.Proc],
    redis: load_procs.Redis,
    postgres: Cluster,
    duration: float,
    sign_ins: list[dict[str, str]],
) -> None:
    """The four restarts, a sixth of `duration` apart; `sign_ins`: clients' signIn
    variables, for the requests in flight at the SIGTERM (several at once of one account
    would trip its sign-in throttle, which counts attempts before the password is checked)."""
    await asyncio.sleep(duration / 6)
    await _stop_api(restarts, api, apis[-1], sign_ins)
    await asyncio.sleep(duration / 6)
    await _kill_worker(restarts, workers[0])
    await asyncio.sleep(duration / 6)
    await _restart_redis(restarts, redis)
    await asyncio.sleep(duration / 6)
    await _restart_postgres(restarts, postgres, api.recorder)


async def _stop_api(
    restarts: Restarts, api: Api, proc: load_procs.Proc, sign_ins: list[dict[str, str]]
) -> None:
    # Requests in flight: BURST connections opened first (a balancer keeps them open), then
    # a client sign-in on each (it takes a while: the password hash). The process leaves the
    # rotation at once and gets its SIGTERM a moment later, once the server has surely read
    # what was sent to it (SIGTERM closes a connection whose request is not read yet: see
    # READ_DELAY), while the sign-ins still run.
    await asyncio.gather(
        *(
            api.graphql(
                "restart in-flight", None, SIGN_IN, sign_ins[i % len(sign_ins)], to=proc.url
            )
            for i in range(BURST)
        )
    )
    burst = [
        asyncio.create_task(
            api.graphql(
                "restart in-flight", None, SIGN_IN, sign_ins[i % len(sign_ins)], to=proc.url
            )
        )
        for i in range(BURST)
    ]
    api.take_out(proc.url)
    await asyncio.sleep(READ_DELAY)
    in_flight = api.in_flight[proc.url]
    unanswered = sum(1 for task in burst if not task.done())
    stopped = time.monotonic()
    proc.signal(signal.SIGTERM)
    answered = sum(1 for result in await asyncio.gather(*burst) if result is not None)
    code = await asyncio.to_thread(proc.wait, 60)
    gone = time.monotonic() - stopped
    await asyncio.sleep(PAUSE)
    proc.start()
    await asyncio.to_thread(load_procs.wait_ready, proc)
    api.put_back(proc.url)
    restarts.named.append((f"{proc.name} SIGTERM", stopped, time.monotonic()))
    restarts.api_stops += 1
    restarts.lines.append(
        f"{proc.name} SIGTERM with {in_flight} request(s) in flight ({unanswered} of a burst "
        f"of {BURST}; {answered} of the burst answered, any other is an error above): exited "
        f"{code} (uvicorn re-raises the "
        f"signal after its graceful shutdown) after {gone:.1f} s, serving again "
        f"{time.monotonic() - stopped:.1f} s after the signal"
    )


async def _kill_worker(restarts: Restarts, proc: load_procs.Proc) -> None:
    # Killed while a sync pass holds a mailbox's lease, where one can be caught (within
    # LEASE_WAIT): if this worker holds it, the mailbox waits for the lease to run out.
    from models import Mailbox

    deadline = time.monotonic() + LEASE_WAIT
    while time.monotonic() < deadline:
        if held := await Mailbox.filter(lease_until__isnull=False).exists():
            break
        await asyncio.sleep(0.01)
    killed = time.monotonic()
    restarts.kills.append(killed)
    restarts.kill_names.append(f"{proc.name} SIGKILL")
    proc.signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 30)
    await asyncio.sleep(PAUSE)
    started = load_procs.starts(proc)
    proc.start()
    await asyncio.to_thread(load_procs.wait_worker, proc, started + 1)
    restarts.windows.append((killed, killed))  # what it stored but had not yet announced
    restarts.named.append((f"{proc.name} SIGKILL", killed, time.monotonic()))
    restarts.worker_kills += 1
    during = "while a sync pass held a mailbox lease" if held else "between sync passes"
    restarts.lines.append(
        f"{proc.name} SIGKILL {during}, running again after {time.monotonic() - killed:.1f} s"
    )


async def _restart_redis(restarts: Restarts, redis: load_procs.Redis) -> None:
    stopped = time.monotonic()
    await asyncio.to_thread(redis.stop)
    await asyncio.sleep(PAUSE)
    await asyncio.to_thread(redis.start)
    back = time.monotonic()
    restarts.windows.append((stopped, back))
    restarts.named.append(("Redis restart", stopped, back))
    restarts.redis_restarts += 1
    restarts.lines.append(f"Redis stopped and started again: down {back - stopped:.1f} s")


async def _restart_postgres(restarts: Restarts, postgres: Cluster, recorder: Recorder) -> None:
    """Stopped (fast: sessions ended) and started again; Portico is not restarted."""
    stopped, wall = time.monotonic(), time.time()
    outage: list[float | None] = [stopped, None]
    recorder.outages.append(outage)
    restarts.kills.append(stopped)
    restarts.kill_names.append("PostgreSQL stopping")
    await asyncio.to_thread(postgres.stop)
    await asyncio.sleep(PAUSE)
    await asyncio.to_thread(postgres.start)
    back = time.monotonic()
    outage[1] = back + AFTER  # and a moment to find the database again
    restarts.kills.append(back)
    restarts.kill_names.append("PostgreSQL back")
    restarts.windows.append((stopped, back))
    restarts.named.append(("PostgreSQL restart", stopped, back))
    restarts.wall_outages.append((wall, time.time() + AFTER))
    restarts.postgres_restarts += 1
    restarts.lines.append(
        f"PostgreSQL stopped (fast) and started again: down {back - stopped:.1f} s"
    )
