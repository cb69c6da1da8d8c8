"""Test databases: which backend a run uses, and throwaway PostgreSQL databases."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncpg

from tests.support.services import POSTGRES_URL


@dataclass
class Database:
    backend: str
    url: str


async def create_postgres_database() -> tuple[str, str]:
    name = f"portico_test_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"


async def drop_postgres_database(name: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
