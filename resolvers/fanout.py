"""Multiplexed messageSynced: subscribers who would be sent the same bytes share one execution.

Subscribers of one process with the same document, variables and visibility (firm, role and
rights, account filter) form a group. The group holds ONE bus subscription and, for each event,
does the work once for all its members before waking any of them: ONE query re-checks the
sessions of every member (the check each stock subscriber made per event), one loads the
message, one execution builds the result, and its `payload` is JSON-encoded once. Each member
then wakes in its own operation's task, applies its own session's verdict and writes that
text, framed with its own operation id, to its own socket. A member keeps a bounded queue of
its own, so a slow client misses events alone and never delays the others.

A member whose session is gone or who lost the inbox right ends exactly as the stock path ends
(the same error, then `complete`); a member whose rights changed but who may still read mail
gets that event from the stock per-subscriber execution (its generator yields the message).
Only operations started by the WebSocket handlers (which say where to write: `current_sink`)
are multiplexed; `registry_for(bus).enabled = False` turns it off (the differential test).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from graphql import DocumentNode, GraphQLError, parse
from graphql.execution import Executor, MiddlewareManager

from models import Session, StaffMember
from resolvers.context import Context
from schema.messages import Message
from services.firm import enrollment
from services.mail import message_pages, threads
from services.shared.pubsub import DEFAULT_MAX_QUEUE, EventBus
from services.shared.scope import FirmScope
from services.shared.sessions import resolve_session_shared

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = DEFAULT_MAX_QUEUE  # events held for one slow client before it misses some


@dataclass(frozen=True, slots=True)
class Sink:
    """Where one operation's results go: its socket, its view's JSON encoder, the encoded
    message around a payload, and the request as the client sent it (the group key and the
    shared execution need it)."""

    send: Callable[[Any], Awaitable[None]]  # the encoded message (text, or bytes if so encoded)
    encode: Callable[[object], str | bytes]  # the view's encode_json, as stock sends use
    prefix: Any  # the encoded message up to its payload (this operation's id in it)
    suffix: Any
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    task: asyncio.Task[Any] | None  # the operation's: once it is being stopped, write nothing

    @property
    def open(self) -> bool:
        """False once the client stopped the operation or left (its task is cancelled): a
        stock operation sends nothing after that either."""
        return self.task is None or (not self.task.done() and not self.task.cancelling())

    def frame(self, payload: Any) -> Any:
        """The very message stock strawberry sends: its encoder's text of the same dict."""
        return self.prefix + payload + self.suffix


# Set by the WebSocket handlers in each operation's task (a ContextVar is per task).
current_sink: ContextVar[Sink | None] = ContextVar("portico_operation_sink", default=None)

_MARK = "portico-payload-" + secrets.token_hex(8)


def framing(encode: Callable[[object], str | bytes], message: dict[str, Any]) -> tuple[Any, Any]:
    """The encoded `message` (its `payload` left out) before and after where the payload
    goes, so a payload encoded once is framed for each operation without encoding again."""
    text = encode({**message, "payload": _MARK})
    mark = encode(_MARK)
    before, found, after = text.partition(mark)  # type: ignore[arg-type]
    if not found:
        raise ValueError("the encoder does not keep a string's encoding inside a message")
    return before, after


Visibility = tuple[int, str, bool, bool]
GroupKey = tuple[str, str | None, str, Visibility, int | None]


def visibility(staff: StaffMember) -> Visibility:
    """What decides what a staff member may see of a Message and below: the firm (every
    loader is firm-scoped), the role and the rights (field permissions, replies among
    deliveries). Nothing under messageSynced reads the member's own id or session, but for a
    private message's owner, who is served on their own (`reads_privately`)."""
    return (staff.firm_id, str(staff.role), staff.can_manage_accounts, staff.can_use_inbox)


def reads_privately(staff_id: int, row: Any) -> bool:
    """Whether staff member `staff_id` reads the message otherwise than the group's shared
    execution does (it runs as nobody in particular: services/mail/threads.group_reader): the
    owner of a private message reads its content, so theirs is executed on its own."""
    return row.private_to_id is not None and row.private_to_id == staff_id


def group_key(sink: Sink, staff: StaffMember, account_id: int | None) -> GroupKey:
    """Same key, same bytes: the document, the variables, the visibility, the account."""
    variables = json.dumps(sink.variables, sort_keys=True, default=str)
    return (sink.query, sink.operation_name, variables, visibility(staff), account_id)


@dataclass(slots=True)
class Outcome:
    """One event as the group worked it out: its members' live sessions by token, the
    message row (None: gone), the encoded payload (None: each member executes it, as when no
    member still had the group's visibility); or the error that stopped the work (each
    member raises it, as a stock subscriber would)."""

    sessions: dict[str, Session | None]
    row: Any = None
    payload: Any = None  # as the view encodes: str (or bytes)
    error: Exception | None = None


class Member:
    """One subscriber of a group. The group writes an event's frame to the member's socket
    itself when the member's session may see it as the group does (no task wakes for it);
    else it queues the outcome (bounded) for the member's own task, which then ends the
    stream with the stock error or executes the event as stock."""

    __slots__ = (
        "_busy",
        "_closed",
        "_items",
        "_sending",
        "_waiter",
        "dropped",
        "request",
        "settings",
        "sink",
        "token",
    )

    def __init__(self, token: str | None, sink: Sink, request: Any, settings: Any) -> None:
        self.token = token
        self.sink = sink
        self.request = request  # a shared execution's context needs the app
        self.settings = settings
        self.dropped = 0
        # Made only while something waits in them: most members never queue anything, and
        # an empty deque or an asyncio.Event (a deque inside) costs about 700 bytes each.
        self._items: deque[Outcome] | None = None
        self._waiter: asyncio.Future[None] | None = None  # the task waiting in `next`
        self._sending: asyncio.Future[None] | None = None  # a write the socket held back
        self._closed = False
        self._busy = False  # its task holds an outcome it has not finished with

    def deliver(self, outcome: Outcome, view: Visibility) -> None:
        """Hands the member one event: written at once when its session passes the checks
        and sees what the group sees, and nothing of it is still queued, in its task's
        hands (which may be checking its session) or being written (order is kept); else
        queued for its task."""
        if not self.sink.open:
            return
        if outcome.error is None and not self._items and not self._busy and self._idle():
            session = outcome.sessions.get(self.token) if self.token else None
            staff = session.staff_member if session is not None else None
            # Someone who must use an authenticator goes through their task, which checks
            # that one is set up (services/firm/enrollment: a query).
            if (
                staff is not None
                and staff.uses_inbox
                and visibility(staff) == view
                and not enrollment.requires_authenticator(session.firm, staff)
            ):
                if outcome.row is None:
                    return  # gone meanwhile: nothing to show
                if outcome.payload is not None and not reads_privately(staff.pk, outcome.row):
                    self._write(self.sink.frame(outcome.payload))
                    return
        self.offer(outcome)

    def offer(self, outcome: Outcome) -> None:
        items = self._items
        if items is None:
            items = self._items = deque()
        if len(items) >= SUBSCRIBER_QUEUE:
            self.dropped += 1  # too slow: misses this event, as a stock subscriber would
            return
        items.append(outcome)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def cancel_write(self) -> None:
        """Drops a write the socket held back: once the operation has ended nothing of it
        may go out (the client may reuse its id), as cancelling a stock operation's task
        cancels its pending send."""
        if self._sending is not None and not self._sending.done():
            self._sending.cancel()

    async def next(self) -> Outcome | None:
        """The next event's outcome; None once the group has ended (the bus closed). The
        task is done with the one before: the group may write to the socket again."""
        self._busy = False
        while not self._items:
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._busy = True
        outcome = self._items.popleft()
        if not self._items:
            self._items = None
        return outcome

    async def flushed(self) -> None:
        """Returns once a write the socket held back is done (before the task writes)."""
        if not self._idle():
            assert self._sending is not None
            await asyncio.shield(self._sending)

    @property
    def held_back(self) -> bool:
        """A write the group made is waiting for the socket to drain."""
        return not self._idle()

    def _idle(self) -> bool:
        return self._sending is None or self._sending.done()

    def _write(self, text: Any) -> None:
        # The socket's send runs to its end at once unless the client's buffer is full
        # (uvicorn then waits until it drains): only then is the rest left to a task, so a
        # slow client never holds the group up and 2,000 writes cost no task switch.
        send = self.sink.send(text)
        try:
            waiting = send.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            return
        except Exception:  # never the group's concern: the member's own read loop ends it
            log.exception("fanout: writing to a subscriber failed")
            return
        self._sending = asyncio.ensure_future(_Resumed(send, waiting))


class _Resumed:
    """The rest of a coroutine already stepped once (it gave `waiting` to wait for)."""

    __slots__ = ("coroutine", "waiting")

    def __init__(self, coroutine: Any, waiting: Any) -> None:
        self.coroutine = coroutine
        self.waiting = waiting

    def __await__(self) -> Any:
        waiting = self.waiting
        while True:
            try:
                value = yield waiting
            except BaseException as exc:  # cancelled: the coroutine hears it, as awaited
                step = self.coroutine.throw
                argument: Any = exc
            else:
                step = self.coroutine.send
                argument = value
            try:
                waiting = step(argument)
            except StopIteration as stop:
                return stop.value


class Group:
    """Members with one key, and the task that reads their channel and works out each
    event once for all of them."""

    def __init__(
        self,
        registry: Registry,
        key: GroupKey,
        schema: Any,
        sink: Sink,
        channel: str,
        accepts: Callable[[dict[str, Any]], int | None],
    ) -> None:
        self.registry = registry
        self.key = key
        self.schema = schema  # the strawberry schema
        self.sink = sink  # the first member's: the request every member sent
        self.channel = channel
        self.accepts = accepts  # the message id an event announces, if the group wants it
        self.members: set[Member] = set()
        self.error: Exception | None = None  # why the group could not listen
        self._ready = asyncio.Event()
        self._document: DocumentNode | None = None
        self._task = asyncio.create_task(self._run(), name=f"portico-fanout-{channel}")

    @property
    def view(self) -> Visibility:
        return self.key[3]

    async def started(self) -> None:
        """Returns once the group listens (RedisBus: Redis confirmed the SUBSCRIBE), so an
        event published from now on reaches the member; raises what stopped it."""
        await self._ready.wait()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        try:
            async with self.registry.bus.subscribe(
                self.channel, max_queue=SUBSCRIBER_QUEUE
            ) as events:
                self._ready.set()
                async for event in events:
                    message_id = self.accepts(event)
                    if message_id is None or not self.members:
                        continue
                    try:
                        outcome = await self._work_out(message_id)
                    except Exception as exc:  # each member raises it, as stock
                        outcome = Outcome({}, error=exc)
                    for member in tuple(self.members):
                        member.deliver(outcome, self.view)
        except Exception as exc:  # the bus closed before the group listened
            self.error = exc
        finally:
            self._ready.set()
            self.registry.forget(self)
            for member in self.members:
                member.close()

    async def _work_out(self, message_id: int) -> Outcome:
        tokens = list({m.token for m in self.members if m.token})
        # Coalesced: every distinct token (other groups' of this turn too) in one query.
        found = await asyncio.gather(*(resolve_session_shared(t) for t in tokens))
        sessions = dict(zip(tokens, found, strict=True))
        row = await message_pages.announced_message(FirmScope(self.view[0]), message_id)
        if row is None:
            return Outcome(sessions)
        for member in self.members:
            session = sessions.get(member.token or "")
            staff = session.staff_member if session is not None else None
            if staff is not None and staff.uses_inbox and visibility(staff) == self.view:
                # As nobody in particular of the group's role, nested lists (a message's
                # accounts' messages) too: a private message's owner is served on their own
                # (reads_privately), everyone else sees what this shows.
                reader = threads.group_reader(self.view[1], session.firm)
                context = Context(
                    request=member.request,
                    response=None,
                    settings=member.settings,
                    session=session,
                    reader=reader,
                )
                payload = await self._execute(context, Message.from_model(row, reader))
                return Outcome(sessions, row, payload)
        return Outcome(sessions, row)  # nobody may see it as the group would: each on its own

    async def _execute(self, context: Context, root: Message) -> str | None:
        """The payload stock strawberry would send for this event, encoded once; None when
        the request cannot be run here (each member then runs it, as stock)."""
        if self._document is None:
            self._document = parse(self.sink.query)
        executor = Executor.build(
            self.schema._schema,
            self._document,
            None,
            context,
            self.sink.variables,
            self.sink.operation_name,
            middleware=MiddlewareManager(),
        )
        if isinstance(executor, list):
            return None
        result = executor.build_per_event_executor(root).execute_operation(False)
        if isinstance(result, Awaitable):
            result = await result
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            errors: list[GraphQLError] = list(result.errors)
            self.schema._process_errors(errors)  # logged once, shaped as for every member
            payload["errors"] = [error.formatted for error in errors]
        return self.sink.encode(payload)


class Registry:
    """One bus's groups, by key."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.enabled = True
        self.groups: dict[GroupKey, Group] = {}

    def join(
        self,
        key: GroupKey,
        member: Member,
        *,
        schema: Any,
        sink: Sink,
        channel: str,
        accepts: Callable[[dict[str, Any]], int | None],
    ) -> Group:
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(self, key, schema, sink, channel, accepts)
        group.members.add(member)
        return group

    def leave(self, group: Group, member: Member) -> None:
        group.members.discard(member)
        if not group.members:
            self.forget(group)
            group.stop()

    def forget(self, group: Group) -> None:
        if self.groups.get(group.key) is group:
            del self.groups[group.key]


_registries: WeakKeyDictionary[Any, Registry] = WeakKeyDictionary()


def registry_for(bus: EventBus) -> Registry:
    registry = _registries.get(bus)
    if registry is None:
        registry = _registries[bus] = Registry(bus)
    return registry
