"""A pytest plugin for `make mutants` only (pyproject's [tool.mutmut] loads it with -p).

mutmut starts a pytest session per mutant, and each session migrates a new SQLite database,
which takes seconds. mutmut mutates services/portal only, never the schema, so every session
can start from a copy of one database migrated once. mutmut loads this plugin before it
forks its workers, so they all share the template made in its first session.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from portico import db

_migrate = db.migrate
_TEMPLATE = Path(tempfile.mkdtemp(prefix="portico-mutants-")) / "migrated.sqlite3"


async def migrate_from_template(database_url: str) -> None:
    """db.migrate, but a SQLite database is a copy of the template (migrated on first use)."""
    if not database_url.startswith("sqlite://"):
        await _migrate(database_url)
        return
    if not _TEMPLATE.exists():
        await _migrate(f"sqlite://{_TEMPLATE}")
    shutil.copyfile(_TEMPLATE, database_url.removeprefix("sqlite://"))


db.migrate = migrate_from_template
