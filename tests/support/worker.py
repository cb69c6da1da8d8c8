"""A real `portico worker` process for tests that need one (crashes, several workers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_worker(log: Path, **settings: str | Path | float) -> subprocess.Popen[bytes]:
    """`portico worker` with exactly the given settings (`poll_seconds=0.1` becomes
    PORTICO_POLL_SECONDS): the test's own PORTICO_* variables are left out, so the worker
    never picks up a setting the test did not mean. Its log goes to a file, not a pipe (a
    pipe nobody reads fills up and stalls the worker)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    env.update({f"PORTICO_{name.upper()}": str(value) for name, value in settings.items()})
    return subprocess.Popen(
        [sys.executable, "-m", "portico", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
