"""Where the compiled path meets strawberry: an executor class that answers a query from
its plan when it has one, and hands everything else to the stock executor it extends."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

from graphql import (
    ArgumentNode,
    DocumentNode,
    FragmentDefinitionNode,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    print_ast,
    visit,
)
from graphql.execution import ExecutionResult
from graphql.execution.executor import CollectedErrors
from graphql.language import Visitor
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from compiled.plan import Shape, compile_query
from compiled.run import run_plan
from schema.validation import MAX_KEPT_DOCUMENT

# Plans kept, one entry per operation of the documents the parser cache keeps; and per
# operation, one plan per combination of the values its @include/@skip variables take.
# Documents longer than the validator keeps (MAX_KEPT_DOCUMENT) run on the stock executor:
# kept here, their trees would stay in memory.
MAX_OPERATIONS = 256
MAX_VARIANTS = 16


@dataclass(frozen=True)
class PlanStats:
    compiled: int  # queries answered from a plan
    stock: int  # queries the planner does not cover (the stock executor ran them)
    fell_back: int  # plans that met an error or null: the stock executor ran them again


class _Entry:
    __slots__ = ("conditions", "operation", "variants")

    def __init__(self, operation: OperationDefinitionNode, conditions: tuple[str, ...]) -> None:
        self.operation = operation  # held, so its id() is not reused while kept
        self.conditions = conditions
        self.variants: dict[tuple[Any, ...], Shape | None] = {}


@dataclass(frozen=True)
class Mismatch:
    query: str  # the operation, printed
    compiled: str  # the compiled answer's data, as JSON
    stock: str  # the stock executor's data and errors, as JSON


# Shadow checking, for the test suite: each query answered from a plan is run again by the
# stock executor and any difference is recorded here (tests/conftest.py fails the test).
SHADOW = {"on": False}
MISMATCHES: list[Mismatch] = []


class Plans:
    """The plans of one schema. `enabled` False runs every operation on the stock executor
    (the differential test compares the two); `stats()` is for tests and benchmarks."""

    def __init__(self, maxsize: int = MAX_OPERATIONS) -> None:
        self.enabled = True
        self.maxsize = maxsize
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self.compiled = self.stock = self.fell_back = 0

    def stats(self) -> PlanStats:
        return PlanStats(self.compiled, self.stock, self.fell_back)

    def clear(self) -> None:
        self._entries.clear()
        self.compiled = self.stock = self.fell_back = 0

    def plan_for(self, executor: CompiledExecutor) -> Shape | None:
        operation = executor.operation
        if operation.operation is not OperationType.QUERY:
            return None  # before taking a slot in the cache
        if operation.loc is None or len(operation.loc.source.body) > MAX_KEPT_DOCUMENT:
            return None
        entry = self._entries.get(id(operation))
        if entry is None or entry.operation is not operation:
            entry = _Entry(
                operation, _condition_variables(operation, executor.fragment_definitions)
            )
            self._entries[id(operation)] = entry
            if len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(id(operation))
        values = executor.variable_values.coerced
        key = tuple(values.get(name) for name in entry.conditions)
        if key in entry.variants:
            return entry.variants[key]
        try:
            plan: Shape | None = compile_query(executor)
        except Exception:  # Unsupported, or anything graphql-core raised: stock runs it
            plan = None
        if len(entry.variants) < MAX_VARIANTS:
            entry.variants[key] = plan
        return plan


class CompiledExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, answering planned queries from their plan."""

    plans: ClassVar[Plans]

    def execute_operation(self, serially: bool | None = None) -> Any:
        plans = self.plans
        if not plans.enabled or serially is not None or self.abort_signal is not None:
            return super().execute_operation(serially)
        plan = plans.plan_for(self)
        if plan is None:
            plans.stock += 1
            return super().execute_operation(serially)
        return self._answer(plan)

    async def _answer(self, plan: Shape) -> ExecutionResult:
        try:
            data = await run_plan(plan, self)
        except Exception:  # any failure: the stock executor answers it exactly (below)
            data = None
        if data is None:  # run outside the handler, so its errors do not chain to ours
            self.plans.fell_back += 1
            result = super().execute_operation()
            return await result if self.is_awaitable(result) else result  # type: ignore[no-any-return]
        self.plans.compiled += 1
        if SHADOW["on"]:
            await self._compare(plan, data)
        return self.build_response(data)  # type: ignore[return-value]

    async def _compare(self, plan: Shape, data: dict[str, Any]) -> None:
        mismatch = await self._differs(data)
        if mismatch is not None:
            # A test's background worker may have written between the two runs: a planner
            # bug differs again when both run once more, a race (almost always) does not.
            again = await run_plan(plan, self)
            mismatch = await self._differs(again) if again is not None else mismatch
        if mismatch is not None:
            MISMATCHES.append(mismatch)

    async def _differs(self, data: dict[str, Any]) -> Mismatch | None:
        """The stock executor's answer now, when it is not `data`."""
        kept, self.collected_errors = self.collected_errors, CollectedErrors()
        stock = super().execute_operation()
        if self.is_awaitable(stock):
            stock = await stock
        self.collected_errors = kept
        ours = json.dumps(data, default=repr)
        if not stock.errors and ours == json.dumps(stock.data, default=repr):
            return None
        theirs = json.dumps(
            {"data": stock.data, "errors": [str(e) for e in stock.errors or ()]}, default=repr
        )
        return Mismatch(print_ast(self.operation), ours, theirs)


def executor_class(plans: Plans) -> type[CompiledExecutor]:
    """The executor class of one schema, answering from `plans`."""
    return type("CompiledExecutor", (CompiledExecutor,), {"plans": plans})


class _ConditionVariables(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def enter_directive(self, node: Any, *_: Any) -> None:
        if node.name.value in ("include", "skip"):
            for argument in node.arguments or ():
                if isinstance(argument, ArgumentNode) and isinstance(argument.value, VariableNode):
                    self.names.append(argument.value.name.value)


def _condition_variables(
    operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
) -> tuple[str, ...]:
    """The variables @include and @skip read anywhere in the operation or the document's
    fragments (a superset is harmless: it only keys plans more finely)."""
    visitor = _ConditionVariables()
    visit(DocumentNode(definitions=(operation, *fragments.values())), visitor)
    return tuple(sorted(set(visitor.names)))
