"""The operator commands of runtime.md, run as the `portico` console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PORTICO = [sys.executable, "-m", "portico"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    return {**base, "PORTICO_VAR_DIR": str(tmp_path / "var")}


def portico(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PORTICO, *args],
        env={**env, **extra},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_create_firm_and_set_password(env, tmp_path):
    assert portico(env, "migrate").returncode == 0
    assert (tmp_path / "var" / "portico.sqlite3").exists()

    created = portico(
        env,
        "create-firm",
        "--name",
        "Acme LLP",
        "--slug",
        "acme",
        "--owner-email",
        "o@acme.example",
        PORTICO_OWNER_PASSWORD="long-enough-secret",
    )
    assert created.returncode == 0, created.stderr
    assert "created firm acme" in created.stdout

    again = portico(
        env,
        "create-firm",
        "--name",
        "Other",
        "--slug",
        "ACME",
        "--owner-email",
        "x@acme.example",
        "--owner-password",
        "long-enough-secret",
    )
    assert again.returncode != 0 and "firm with slug 'acme' exists" in again.stderr

    weak = portico(
        env, "set-password", "--firm", "acme", "--email", "o@acme.example", "--password", "short"
    )
    assert weak.returncode != 0 and "at least" in weak.stderr
    unknown = portico(
        env,
        "set-password",
        "--firm",
        "acme",
        "--email",
        "x@acme.example",
        "--password",
        "long-enough-secret",
    )
    assert unknown.returncode != 0 and "No such staff member" in unknown.stderr
    for firm, email in [("a" * 65, "o@acme.example"), ("acme", "o" * 250 + "@acme.example")]:
        too_long = portico(
            env, "set-password", "--firm", firm, "--email", email, PORTICO_PASSWORD="long-enough-9"
        )
        assert too_long.returncode != 0, too_long.stderr  # not found, no traceback
        assert "No such staff member" in too_long.stderr and "Traceback" not in too_long.stderr
    changed = portico(
        env,
        "set-password",
        "--firm",
        "acme",
        "--email",
        "O@ACME.example",
        PORTICO_PASSWORD="another-long-secret",
    )
    assert changed.returncode == 0, changed.stderr


def test_reset_authenticator(env):
    portico(env, "migrate")
    portico(
        env, "create-firm", "--name", "Acme LLP", "--slug", "acme", "--owner-email",
        "o@acme.example", PORTICO_OWNER_PASSWORD="long-enough-secret",
    )  # fmt: skip
    done = portico(env, "reset-authenticator", "--firm", "acme", "--email", "O@acme.example")
    assert done.returncode == 0, done.stderr
    assert "authenticator reset for o@acme.example: 0 session(s) ended" in done.stdout
    nobody = portico(
        env, "reset-authenticator", "--firm", "acme", "--email", "o@acme.example", "--client"
    )
    assert nobody.returncode != 0 and "No such portal user" in nobody.stderr


def test_password_is_never_read_from_a_pipe_without_being_asked(env):
    portico(env, "migrate")
    result = portico(
        env, "create-firm", "--name", "A", "--slug", "ab", "--owner-email", "o@a.example"
    )
    assert result.returncode != 0
    assert "PORTICO_OWNER_PASSWORD" in result.stderr


def test_seed_demo_is_idempotent(env):
    portico(env, "migrate")
    first = portico(env, "seed-demo")
    assert "sign in as owner@demo.example" in first.stdout
    assert "exists already" in portico(env, "seed-demo").stdout


def test_export_schema_prints_sdl(env):
    result = portico(env, "export-schema")
    assert result.returncode == 0
    assert "type Query {" in result.stdout and "staffSignIn(" in result.stdout
