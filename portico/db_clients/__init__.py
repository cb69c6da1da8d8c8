"""Tortoise's SQLite and PostgreSQL clients, whose transactions give their connection back
when the task entering them is cancelled or BEGIN fails.

Tortoise takes the connection first (SQLite: the lock of its one connection; PostgreSQL: a
connection of the pool) and sends BEGIN after, outside any `try`. A task cancelled while
BEGIN was under way (a sync pass stopped, a WebSocket operation completed or its socket
closed, a timeout) never gave the connection back: on SQLite every later statement of the
process waited for ever; on PostgreSQL each such task kept one of the pool's connections, and
once all were kept the process hung the same way. `connection_config` (portico/db.py) names
these modules as the engines: their names say the backend, as Tortoise's migration executor
reads a client's module name to choose its schema editor.
"""
