"""The Dovecot test server itself works: mail appended is there to read."""

from __future__ import annotations

import imaplib

from tests.support.imap import PASSWORD, ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)


def test_append_then_read(imap: ImapServer) -> None:
    raw = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nbody\r\n"
    imap.append("harness@example.com", raw)
    with imaplib.IMAP4(imap.host, imap.port) as client:
        client.login("harness@example.com", PASSWORD)
        status, data = client.select("INBOX", readonly=True)
        assert status == "OK" and int(data[0]) == 1
        status, folders = client.list()
        assert any(b"\\Sent" in line for line in folders)
        client.logout()
