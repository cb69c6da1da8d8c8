"""Hostile values for GraphQL's own scalars: schemathesis' defaults are short, printable
strings and small numbers, which never reach the limits issue 10 is about (column lengths,
control characters, 32-bit ids). Registered for String, ID, Int and Upload; each still draws
ordinary values most of the time, so resolvers are reached with plausible input too."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import schemathesis
from hypothesis import strategies as st
from schemathesis.graphql import nodes

SCHEMA = Path(__file__).resolve().parent.parent / "schema.graphql"
NODE_TYPES = sorted(set(re.findall(r"^type (\w+) implements Node", SCHEMA.read_text(), re.M)))

# Around column and type limits: 32-bit and 64-bit integers, and lengths of common columns.
INTEGER_EDGES = (0, 1, 2, 3, -1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 10**30)
LENGTHS = (63, 64, 65, 100, 254, 255, 256, 1000, 5000)
# One byte, two bytes and four bytes in UTF-8 (a mathematical double-struck A).
FILLS = ("a", "\u00e9", "\U0001d538", "-")
# Control characters (NUL first), the bidi overrides, and the byte order mark.
HOSTILE_CHARACTERS = ("\x00", "\x01", "\x08", "\x0b", "\x1b", "\x7f", "\x85", "\u202e", "\ufeff")
# Known values of the fuzz firm, so some requests pass the first checks (fuzz.server).
KNOWN = ("fuzz", "owner@fuzz.example", "Fuzz Owner", "a@b.example", "localhost", "127.0.0.1")


def _long_strings() -> st.SearchStrategy[str]:
    def build(length: int, fill: str, email: bool) -> str:
        return (fill * length)[: length - 10] + "@x.example" if email else fill * length

    return st.builds(build, st.sampled_from(LENGTHS), st.sampled_from(FILLS), st.booleans())


def _with_control(text: str, character: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + character + text[at:]


def strings() -> st.SearchStrategy[str]:
    controlled = st.builds(
        _with_control,
        st.one_of(st.sampled_from(KNOWN), st.text(max_size=20)),
        st.sampled_from(HOSTILE_CHARACTERS),
        st.integers(min_value=0, max_value=40),
    )
    return st.one_of(
        st.text(max_size=30),
        st.sampled_from(KNOWN),
        controlled,
        _long_strings(),
        st.sampled_from(INTEGER_EDGES).map(str),
    )


def global_ids() -> st.SearchStrategy[str]:
    """Well-formed ids of every node type, small (rows the fuzzer made) or out of range."""
    pks = st.one_of(st.integers(min_value=1, max_value=5), st.sampled_from(INTEGER_EDGES))
    encoded = st.builds(global_id, st.sampled_from(NODE_TYPES), pks)
    return st.one_of(encoded, strings())


def global_id(type_name: str, pk: int) -> str:
    """Portico's encoding (schema/ids.py, strawberry's GlobalID): base64 of "Type:pk"."""
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode()


def integers() -> st.SearchStrategy[int]:
    edges = st.sampled_from(INTEGER_EDGES).flatmap(lambda n: st.sampled_from((n, -n)))
    return st.one_of(st.integers(min_value=-(2**31), max_value=2**31 - 1), edges)


def register() -> None:
    schemathesis.graphql.scalar("String", strings().map(nodes.String))
    schemathesis.graphql.scalar("ID", global_ids().map(nodes.String))
    schemathesis.graphql.scalar("Int", integers().map(nodes.Int))
    # Upload is multipart-only: inline in a query it can only be refused, cleanly.
    schemathesis.graphql.scalar("Upload", st.text(max_size=40).map(nodes.String))
