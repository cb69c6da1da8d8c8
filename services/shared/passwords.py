"""Password hashing with argon2id (argon2-cffi's recommended parameters)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.shared.errors import ErrorCode, input_error

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024

T = TypeVar("T")

_hasher = PasswordHasher()
# At most this many argon2 computations at once per process (each takes 64 MiB and a core).
_argon2_slots = asyncio.Semaphore(4)
# Verified when no such user exists, so a miss costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("portico-timing-equaliser")


def check_strength(password: str, *field: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise input_error(
            ErrorCode.WEAK_PASSWORD,
            f"Use at least {MIN_PASSWORD_LENGTH} characters.",
            *field,
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise input_error(ErrorCode.WEAK_PASSWORD, "That password is too long.", *field)
    if len(set(password)) < 4:
        raise input_error(ErrorCode.WEAK_PASSWORD, "Use more different characters.", *field)


async def hash_password(password: str) -> str:
    return await _in_a_slot(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """True when the password matches; always spends one argon2 verification."""
    return await _in_a_slot(_verify, password_hash, password)


async def _in_a_slot(work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` in a thread (argon2 is ~0.1 s of CPU, and cffi releases the GIL), in one
    of the slots until the thread ends: a caller cancelled meanwhile (a WebSocket operation
    completed by its client) cannot stop the thread, so it must not free the slot for more."""
    await _argon2_slots.acquire()
    try:
        running = asyncio.get_running_loop().run_in_executor(None, work, *args)
    except BaseException:
        _argon2_slots.release()
        raise
    running.add_done_callback(_slot_freed)
    return await asyncio.shield(running)


def _slot_freed(running: asyncio.Future[Any]) -> None:
    _argon2_slots.release()
    if not running.cancelled():
        running.exception()  # read here too: a cancelled caller no longer does


def _verify(password_hash: str | None, password: str) -> bool:
    # Longer than any password that can be set: wrong, never cut to fit. argon2 still runs
    # once, on a bounded prefix, so neither the time nor the work grows with the input.
    fits = len(password) <= MAX_PASSWORD_LENGTH
    try:
        matched = _hasher.verify(password_hash or _DUMMY_HASH, password[:MAX_PASSWORD_LENGTH])
    except (VerificationError, InvalidHashError):
        return False
    return matched and fits and password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
