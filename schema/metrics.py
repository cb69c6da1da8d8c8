"""GraphQL's metrics: operations by name and outcome, their latency, and live subscriptions
(served by portico/metrics.py at /metrics, with the HTTP ones and the database's figures).

Operation names stay bounded: a name becomes a label only for signed-in staff running an
operation their document defines, for the first MAX_OPERATION_NAMES names of the process
(64 characters or less); every other name is "other", an unnamed operation "anonymous".
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from typing import Any, TypeVar

from graphql import OperationDefinitionNode
from prometheus_client import Counter, Gauge, Histogram
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

MAX_OPERATION_NAMES = 200
MAX_OPERATION_NAME_LENGTH = 64
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")  # a GraphQL Name: nothing else becomes a label

GRAPHQL_OPERATIONS = Counter(
    "portico_graphql_operations_total",
    "GraphQL queries and mutations run (HTTP and WebSocket), by operation name and outcome"
    " (error: the answer carries errors).",
    ["operation", "outcome"],
)
GRAPHQL_DURATION = Histogram(
    "portico_graphql_operation_duration_seconds",
    "Time to run a GraphQL query or mutation, parsing and validation included.",
    ["operation"],
)
LIVE_SUBSCRIPTIONS = Gauge(
    "portico_live_subscriptions",
    "GraphQL subscriptions open now.",
    multiprocess_mode="livesum",
)

_operation_names: set[str] = set()


def operation_label(name: str | None, trusted: bool = True) -> str:
    """The operation's label: its name while the names seen stay few and short. Only a
    trusted request (signed-in staff, a name its document defines) may add a name: anyone
    else could fill the labels with made-up names."""
    if not name:
        return "anonymous"
    if name in _operation_names:
        return name
    if (
        not trusted
        or len(name) > MAX_OPERATION_NAME_LENGTH
        or len(_operation_names) >= MAX_OPERATION_NAMES
        or not _NAME.fullmatch(name)
    ):
        return "other"
    _operation_names.add(name)
    return name


class GraphQLMetrics(SchemaExtension):
    """Counts each query and mutation by name and outcome, and times it. A subscription's
    operation lasts as long as its stream: it is counted by LIVE_SUBSCRIPTIONS instead."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        failed = True
        try:
            yield
            failed = False
        finally:
            context = self.execution_context
            if not _is_subscription(context):
                result = context.result
                outcome = "error" if failed or result is None or result.errors else "ok"
                label = operation_label(context.operation_name, _trusted(context))
                GRAPHQL_OPERATIONS.labels(label, outcome).inc()
                GRAPHQL_DURATION.labels(label).observe(time.perf_counter() - started)


def _trusted(context: Any) -> bool:
    """Signed-in staff, and an operation name its document defines."""
    if getattr(context.context, "staff", None) is None or context.graphql_document is None:
        return False
    return any(
        isinstance(d, OperationDefinitionNode) and d.name and d.name.value == context.operation_name
        for d in context.graphql_document.definitions
    )


def _is_subscription(context: Any) -> bool:
    if context.graphql_document is None:
        return False
    try:
        return context.operation_type is OperationType.SUBSCRIPTION
    except Exception:  # an unknown operationName: refused, and counted as an error
        return False


T = TypeVar("T")


async def live(stream: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """`stream`, counted in LIVE_SUBSCRIPTIONS while it runs."""
    LIVE_SUBSCRIPTIONS.inc()
    try:
        async with aclosing(stream):
            async for item in stream:
                yield item
    finally:
        LIVE_SUBSCRIPTIONS.dec()
