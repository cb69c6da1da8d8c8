"""How a send can fail: the two kinds the delivery loop tells apart.

Every transport (services/outbound/transport.py) and the wire builder raise these, with the
reason that is shown as the delivery's lastError.
"""

from __future__ import annotations


class DeliveryFailure(Exception):
    """A send that did not happen; the message is the reason shown as lastError."""


class TemporaryFailure(DeliveryFailure):
    """4xx replies, refused connections, timeouts: the same message may work later."""


class PermanentFailure(DeliveryFailure):
    """5xx replies: the server will not take this message, retrying cannot help."""


def internal_fault(exc: BaseException) -> str:
    """The reason shown for a send that failed by Portico's own fault (a bug): the kind of
    fault only; its text, which may hold internals, goes to the worker's log."""
    return f"Portico could not send it ({type(exc).__name__}); see the worker's log"
