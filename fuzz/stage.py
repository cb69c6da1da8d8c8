"""One fuzz stage: schemathesis against a running server as one identity, then the server's
log of that stage searched for tracebacks."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from fuzz.server import Server, script

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schema.graphql"
CHECKS = ("portico_no_5xx", "portico_no_internal", "portico_no_null_violation")
# Signing out would end the staff stage's session: the anonymous stage fuzzes it instead.
STAFF_EXCLUDED = ("Mutation.signOut",)
REQUEST_TIMEOUT = 30  # connectMailbox may wait 10 s per mail server for a greeting
GRACE = 120  # beyond --max-time: the last requests, shrinking and the report
TRACEBACK = "Traceback (most recent call last):"


@dataclass
class StageResult:
    name: str
    fuzzer_ok: bool
    tracebacks: list[str] = field(default_factory=list)
    server_alive: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.fuzzer_ok and not self.tracebacks and self.server_alive


def command(server: Server, token: str | None, seconds: int, seed: int) -> list[str]:
    """`st run` for this stage (the token, if any, goes into a header)."""
    cmd = [
        script("st"),
        "run",
        str(SCHEMA),
        *("--url", server.graphql_url),
        *("--checks", ",".join(CHECKS)),
        *("--max-time", str(seconds)),
        *("--seed", str(seed)),
        *("--workers", "2"),
        *("--request-timeout", str(REQUEST_TIMEOUT)),
        *("--generation-database", "none"),
        "--no-color",
    ]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
        for name in STAFF_EXCLUDED:
            cmd += ["--exclude-name", name]
    return cmd


def run_stage(name: str, server: Server, token: str | None, seconds: int, seed: int) -> StageResult:
    print(f"\n===== fuzz stage {name}: {seconds} s, seed {seed} =====", flush=True)
    start = server.log_size()
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz.hooks", "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            command(server, token, seconds, seed), cwd=ROOT, env=env, timeout=seconds + GRACE
        )
        result = StageResult(name, fuzzer_ok=done.returncode == 0)
    except subprocess.TimeoutExpired:
        result = StageResult(name, fuzzer_ok=False, notes=[f"st run overran {seconds + GRACE} s"])
    result.tracebacks = tracebacks(server.log(start))
    result.server_alive = server.alive()
    if token and result.server_alive and not server.token_works(token):
        result.notes.append("the staff token stopped working during the stage")
    return result


def tracebacks(log: str) -> list[str]:
    """Each distinct traceback in the log (by its exception and the innermost project frame),
    shortened: how often, the project's frames, and the exception line."""
    lines = log.splitlines()
    seen: dict[tuple[str, str], list[str]] = {}
    counts: dict[tuple[str, str], int] = {}
    for i, line in enumerate(lines):
        if TRACEBACK not in line:
            continue
        end = i + 1
        while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end]):
            end += 1
        block = lines[i:end]
        exception = lines[end] if end < len(lines) else "(log ends)"
        ours = [f.strip() for f in block if f.strip().startswith("File") and _project_frame(f)]
        key = (exception.split(":", 1)[0], ours[-1] if ours else "")
        counts[key] = counts.get(key, 0) + 1
        seen.setdefault(key, [*ours[-3:], _short(exception)])
    return [f"{counts[k]}x\n" + "\n".join(v) for k, v in seen.items()]


def _project_frame(line: str) -> bool:
    return "site-packages" not in line and "<frozen" not in line and "/lib/python" not in line


def _short(line: str, width: int = 240) -> str:
    return line if len(line) <= width else line[:width] + f"... ({len(line)} chars)"
