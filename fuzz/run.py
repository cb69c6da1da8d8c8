"""`python -m fuzz`: each database with each identity, then a summary; exit 1 on a failure."""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

from fuzz.server import ServerError, database, running_server
from fuzz.stage import StageResult, run_stage

BACKENDS = ("sqlite", "postgres")
IDENTITIES = ("anon", "staff")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    folder = Path(tempfile.mkdtemp(prefix="portico-fuzz-"))
    results: list[StageResult] = []
    for backend in args.database or BACKENDS:
        try:
            results += _fuzz_backend(backend, args.identity or IDENTITIES, args, seed, folder)
        except ServerError as exc:
            results.append(StageResult(backend, fuzzer_ok=False, notes=[str(exc)]))
    failed = _summary(results, seed, folder)
    if failed:
        sys.exit(1)
    shutil.rmtree(folder, ignore_errors=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("--database", action="append", choices=BACKENDS, help="default: both")
    parser.add_argument("--identity", action="append", choices=IDENTITIES, help="default: both")
    parser.add_argument("--seconds", type=int, default=60, help="time budget per stage")
    parser.add_argument("--seed", type=int, help="default: random (printed)")
    return parser


def _fuzz_backend(
    backend: str, identities: list[str], args: argparse.Namespace, seed: int, folder: Path
) -> list[StageResult]:
    work = folder / backend
    work.mkdir()
    results = []
    with database(backend, work) as url, running_server(url, work) as server:
        # Signed in before the anonymous stage: its failed sign-ins may use up the
        # per-address budget of 127.0.0.1.
        token = server.staff_token()
        for identity in identities:
            name = f"{backend}/{identity}"
            results.append(
                run_stage(name, server, token if identity == "staff" else None, args.seconds, seed)
            )
            results[-1].notes.append(f"server log: {server.log_path}")
            if not server.alive():
                break
    return results


def _summary(results: list[StageResult], seed: int, folder: Path) -> bool:
    print("\n===== fuzz summary =====")
    failed = False
    for result in results:
        print(f"{result.name}: {'ok' if result.ok else 'FAILED'}")
        failed |= not result.ok
        if not result.fuzzer_ok:
            print("  schemathesis reported failures (above: each with a curl that reproduces it)")
        if not result.server_alive:
            print("  the server died or stopped answering /healthz")
        for block in result.tracebacks:
            print("  traceback in the server log, " + "\n    ".join(block.splitlines()))
        for note in result.notes:
            print(f"  {note}")
    if failed:
        print(
            f"\nreplay: python -m fuzz --seed {seed} --database D --identity I "
            f"(the staff token in curl lines shows as [Filtered]: sign in with staffSignIn); "
            f"work folder kept: {folder}"
        )
    return failed
