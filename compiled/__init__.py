"""The compiled execution path for queries.

A query document seen before is compiled once against the schema into a plan (plan.py):
per selection set, how each field's values are got for a whole level of objects at once
and completed in one loop (run.py). The plan covers plain queries over object types: plain
attributes, batched fields (schema/batched.py: a whole level's values from one call), and
every other field through its own resolver, called as the stock executor calls it. Anything else
(interfaces, unions, introspection, mutations, subscriptions) and any run that meets an
error or a forbidden null is answered by strawberry's stock executor, which this path
extends (executor.py): answers are the same, tests/test_compiled_execution.py proves it.

The boundary: `executor_class(plans)` is the one thing the schema uses
(resolvers/root.py); `Plans.enabled` switches the path off for comparison.
"""

from compiled.executor import CompiledExecutor, Plans, PlanStats, executor_class

__all__ = ["CompiledExecutor", "PlanStats", "Plans", "executor_class"]
