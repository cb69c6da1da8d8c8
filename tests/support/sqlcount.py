"""Counts the SQL statements Tortoise sends, from its own debug log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from compiled import executor as compiled_executor

SKIP_PREFIXES = ("Created connection pool", "Closed connection pool")


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if not text.startswith(SKIP_PREFIXES):
            self.statements.append(text)


@contextmanager
def count_sql() -> Iterator[list[str]]:
    """Yields the list that fills with each statement executed inside the block (with the
    compiled path's shadow check paused: it would add the stock executor's statements)."""
    shadow = compiled_executor.SHADOW["on"]
    compiled_executor.SHADOW["on"] = False
    logger = logging.getLogger("tortoise.db_client")
    counter = _Counter()
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(counter)
    try:
        yield counter.statements
    finally:
        logger.removeHandler(counter)
        logger.setLevel(old_level)
        compiled_executor.SHADOW["on"] = shadow
