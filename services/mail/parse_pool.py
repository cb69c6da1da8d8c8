"""Parsing synced mail on another core while the sync parses the rest itself.

Parsing is most of a first sync's CPU, and while a downloaded batch is parsed the IMAP server
and the database wait. With `PORTICO_SYNC_PARSE_PROCESSES` above 0, the sync hands the second
half of each batch's small messages to a pool of that many processes and parses the first half
meanwhile (services/mail/sync_engine.py, `_Pass.whole`). The pool runs the same
`parse_message`, so a message parses the same wherever it is parsed; anything the pool cannot
answer (a parse that raised, a process that died) is parsed again in the sync's own process,
where a failure is recorded as it always is. 0 (the default) parses everything in the process:
the embedded setup starts no processes of its own.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from services.mail.parse import ParsedMessage, parse_message

log = logging.getLogger(__name__)

MAX_BYTES = 256 * 1024  # bigger messages are parsed in the sync's process (in a thread)
PARENT_CHECK_SECONDS = 5.0

_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def _executor(processes: int) -> ProcessPoolExecutor:
    """The process's pool, made on first use. forkserver: the API or worker process forked
    with its threads and connections would be no safe parent."""
    global _pool, _pool_size
    if _pool is None or _pool_size != processes:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
        context = multiprocessing.get_context("forkserver")
        _pool = ProcessPoolExecutor(
            processes, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),)
        )
        _pool_size = processes
    return _pool


def _exit_with(parent: int) -> None:
    """In a pool process: ends it once the process that made the pool is gone (killed, say,
    by the OOM killer: an idle pool process would otherwise wait for work forever)."""

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_SECONDS)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _forget(pool: ProcessPoolExecutor) -> None:
    """A broken pool is replaced on next use."""
    global _pool
    if _pool is pool:
        _pool = None
        pool.shutdown(wait=False, cancel_futures=True)


def _parse_all(raws: list[bytes], limit: int | None) -> list[ParsedMessage | None]:
    """In a pool process: each message parsed, None where parsing raised (the sync parses it
    again itself, and records the failure there)."""
    parsed: list[ParsedMessage | None] = []
    for raw in raws:
        try:
            parsed.append(parse_message(raw, max_attachment_bytes=limit))
        except Exception:
            parsed.append(None)
    return parsed


class Offload:
    """Messages handed to the pool, their parses awaited one by one."""

    def __init__(self, uids: Sequence[int], job: asyncio.Future[list[ParsedMessage | None]]):
        self._uids = {uid: n for n, uid in enumerate(uids)}
        self._job = job

    def __contains__(self, uid: int) -> bool:
        return uid in self._uids

    async def parsed(self, uid: int) -> ParsedMessage | None:
        """The parse of `uid`, or None: parse it in this process."""
        try:
            return (await self._job)[self._uids[uid]]
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the sync itself is being cancelled
            return None  # the job was: its pool was replaced (`_executor`)
        except Exception:  # a process died (told once, in `offload`), or the answer was lost
            return None

    def cancel(self) -> None:
        self._job.cancel()


def offload(
    processes: int, messages: dict[int, bytes], uids: Sequence[int], limit: int | None
) -> Offload | None:
    """Starts parsing the second half of `uids`' small messages (of `messages`) in the pool;
    None when there is no pool or too little to share."""
    if processes <= 0:
        return None
    small = [uid for uid in uids if uid in messages and len(messages[uid]) <= MAX_BYTES]
    share = small[len(small) // 2 :]
    if len(share) < 2:
        return None
    pool = _executor(processes)
    try:
        job = asyncio.get_running_loop().run_in_executor(
            pool, _parse_all, [messages[uid] for uid in share], limit
        )
    except BrokenProcessPool:  # a process died since the last batch: all parsed here
        log.warning("a mail parsing process died: this batch is parsed in the sync")
        _forget(pool)
        return None

    def broken(done: asyncio.Future[list[ParsedMessage | None]]) -> None:
        if not done.cancelled() and isinstance(done.exception(), BrokenProcessPool):
            log.warning("a mail parsing process died: its messages are parsed in the sync")
            _forget(pool)

    job.add_done_callback(broken)
    return Offload(share, job)
