"""The load test's SMTP server: aiosmtpd in a thread, keeping every message it accepts.

The load test needs more than bench/sinks' counts: the invitation links inside the mail
(clients accept them to get a password) and each message's recipient, besides a count of
every Message-ID (a duplicate is a finding).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from email import message_from_bytes, policy
from typing import Any

from aiosmtpd.controller import Controller

from bench.sinks import free_port

INVITATION_LINK = re.compile(r"/invitation\?token=([A-Za-z0-9_\-]+)")


@dataclass(frozen=True)
class Received:
    message_id: str
    recipients: tuple[str, ...]
    text: str  # the decoded text parts, for links
    at: float  # CLOCK_MONOTONIC when it was accepted


class CaptureSink:
    """Accepts everything; thread-safe (aiosmtpd runs its own loop in a thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        texts = []
        for part in parsed.walk():
            if part.get_content_maintype() == "text":
                try:
                    texts.append(str(part.get_content()))
                except (LookupError, ValueError):
                    texts.append(part.get_payload(decode=True).decode(errors="replace"))
        found = Received(
            str(parsed["Message-ID"] or ""),
            tuple(envelope.rcpt_tos),
            "\n".join(texts),
            time.monotonic(),
        )
        with self._lock:
            self._messages.append(found)
        return "250 OK"

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    def message_ids(self) -> Counter[str]:
        return Counter(m.message_id for m in self.messages())

    def sent_across(self, moments: list[float]) -> set[str]:
        """Message-IDs received twice, once before and once after one of `moments` (a
        worker killed between sending a message and marking it sent)."""
        times: dict[str, list[float]] = {}
        for message in self.messages():
            times.setdefault(message.message_id, []).append(message.at)
        return {
            key
            for key, at in times.items()
            if len(at) == 2 and any(min(at) < moment < max(at) for moment in moments)
        }

    def invitation_tokens(self, recipient: str) -> list[str]:
        """Tokens of invitation links mailed to `recipient`, oldest first."""
        tokens = []
        for message in self.messages():
            if recipient.lower() in (r.lower() for r in message.recipients):
                tokens += INVITATION_LINK.findall(message.text)
        return tokens

    def stop(self) -> None:
        self._controller.stop()
