"""The fuzz stage of CI (`make fuzz`, `python -m fuzz`): schemathesis' GraphQL fuzzing against a
real `portico serve` process in production mode, on SQLite and on PostgreSQL, signed out and
with a staff token. Any 5xx, any INTERNAL error, any null in a non-null field, or any
traceback in the server's log fails the run. docs/testing.md says how to reproduce a failure.
"""
