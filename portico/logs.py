"""Logging set-up: plain lines to stderr; the access log's lines are JSON objects."""

from __future__ import annotations

import logging


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if root.handlers:  # already configured (by a test runner or an embedding app)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("tortoise").setLevel(logging.WARNING)
